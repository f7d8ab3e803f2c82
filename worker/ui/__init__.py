"""The review page (``imgmod ui``): people clear the review queue, browse and export results, and
watch a job's figures, signed in, on the record.

A Starlette app, server-rendered (Jinja2, autoescaped) with a little vanilla JavaScript and no
build step; everything it serves ships in this package (:mod:`worker.ui.templates`,
:mod:`worker.ui.static`) and nothing is loaded from the internet. Routes are thin: the reads and
writes are :mod:`worker.store.review`'s and :mod:`worker.store.decisions`', the same functions
the command line uses. Modules: :mod:`~worker.ui.app` (the app, its middleware, serving it),
:mod:`~worker.ui.web` (what routes share: state, sign-in, roles, CSRF check, rendering),
:mod:`~worker.ui.auth` (users file, password hashes, roles), :mod:`~worker.ui.csrf` (tokens on
every POST), :mod:`~worker.ui.filters` (the URL's filters, pure), :mod:`~worker.ui.present`
(answers as text, pure), :mod:`~worker.ui.images` (where the browser gets an image: the URL
itself or a short-lived signed OSS URL), and the routes: :mod:`~worker.ui.routes_auth`,
:mod:`~worker.ui.routes_queue`, :mod:`~worker.ui.routes_browse` (browse, export, images,
dashboard), :mod:`~worker.ui.routes_admin` (acting on objects behind a confirmation).
"""
