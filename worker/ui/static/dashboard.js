/* The live dashboard: fetch the job's report figures every few seconds and redraw them with
 * the report's own chart code (worker/assets/report_charts.js). */
(function () {
  "use strict";
  var EVERY_MS = 5000;
  var charts = {};

  function redraw(figures) {
    Object.keys(charts).forEach(function (name) { charts[name].destroy(); });
    charts = window.imgmodCharts.draw(figures, document) || {};
    var stamp = document.getElementById("updated");
    if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
    document.body.setAttribute("data-drawn", "1");
  }

  function load(root) {
    fetch(root.getAttribute("data-source"), {headers: {"Accept": "application/json"},
                                             credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (figures) { if (figures) { redraw(figures); } })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { window.setTimeout(function () { load(root); }, EVERY_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("dashboard");
    if (root && window.imgmodCharts) { load(root); }
  });
})();
