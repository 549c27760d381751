// Moat console: the few behaviours htmx does not cover, with no inline
// script (the Content-Security-Policy allows scripts from this origin only).
// Copy buttons (data-copy) and removing a row of the allowlist editor.
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!(t instanceof Element)) { return; }
    var copy = t.closest("button[data-copy]");
    if (copy) {
      var text = copy.getAttribute("data-copy");
      var done = function () { copy.textContent = "Copied"; setTimeout(function () { copy.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { copy.textContent = "Select and copy"; });
      }
      return;
    }
    var rm = t.closest("button.remove-row");
    if (rm) {
      var row = rm.closest("tr");
      var next = row && (row.nextElementSibling || row.previousElementSibling);
      if (row) { row.remove(); }
      var focus = next && next.querySelector("input");
      if (focus) { focus.focus(); }
    }
  });
})();
