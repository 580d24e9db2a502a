// binwatch console: the little that needs script. Everything works without it; this only keeps live pages
// fresh. No inline script anywhere (the pages' Content-Security-Policy forbids it).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.getAttribute("data-live") !== "on") return;
  var timer = setInterval(function () {
    fetch(window.location.pathname, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!fresh) return;
        // Replaced only when something changed, so focus (a keyboard user on Cancel) is not lost for nothing.
        if (fresh.innerHTML !== live.innerHTML) live.innerHTML = fresh.innerHTML;
        if (fresh.getAttribute("data-live") !== "on") {
          live.setAttribute("data-live", "off");
          clearInterval(timer);
        }
      })
      .catch(function () {});
  }, 3000);
})();
