/* imgmod review page: keyboard decisions, click-to-unblur, self-submitting selects.
 * No framework, no build step. Keys act only outside text fields and without modifiers;
 * a form is sent once (a held key does not decide the next image too). */
(function () {
  "use strict";
  var sent = false;

  function submitWith(key) {
    var button = document.querySelector('[data-key="' + key + '"]');
    if (!button || sent) { return false; }
    sent = true;
    var form = button.form;
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    var target = event.target;
    var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
                            target.tagName === "SELECT" || target.isContentEditable);
    if (typing) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    var key = (event.key || "").toLowerCase();
    if (key === "b" || key === "p" || key === "s" || key === "u") {
      if (submitWith(key)) { event.preventDefault(); }
    }
  });

  document.addEventListener("submit", function () { sent = true; });
  window.addEventListener("pageshow", function () { sent = false; });

  document.addEventListener("click", function (event) {
    var figure = event.target.closest && event.target.closest("figure.blurred");
    if (figure) {
      figure.classList.remove("blurred");
      var caption = figure.querySelector("figcaption");
      if (caption) { caption.remove(); }
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) {
      event.target.form.submit();
    }
  });
})();
