// The console's only script (no inline script anywhere: the CSP allows 'self' only).
// 1. An element with data-refresh="N" is fetched again every N seconds and swapped in place,
//    without reloading the page; paused while the tab is hidden.
// 2. A checkbox with data-select-all="NAME" ticks every checkbox named NAME.
(function () {
  "use strict";
  var live = document.querySelector("[data-refresh]");
  if (live) {
    var every = Math.max(2, parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
    var schedule = function () { window.setTimeout(refresh, every); };
    var refresh = function () {
      if (document.hidden) { schedule(); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
        .then(function (response) {
          if (!response.ok || response.redirected) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
          if (fresh) { live.replaceChildren.apply(live, Array.from(fresh.childNodes)); }
          live.classList.remove("stale");
        })
        .catch(function () { live.classList.add("stale"); })
        .then(schedule);
    };
    schedule();
  }
  Array.prototype.forEach.call(document.querySelectorAll("[data-select-all]"), function (all) {
    all.addEventListener("change", function () {
      var boxes = document.querySelectorAll("input[type=checkbox][name='" + all.getAttribute("data-select-all") + "']");
      Array.prototype.forEach.call(boxes, function (box) { box.checked = all.checked; });
    });
  });
})();
