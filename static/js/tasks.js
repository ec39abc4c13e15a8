/* Klingweb task pages: live prompt character counts, "copy as JSON", and the running time of
   unfinished tasks (counted here between two live answers). No dependencies. */
(function () {
  "use strict";

  function chars(text) {
    // Count what the server counts: CR LF as one newline, trimmed, by code point.
    return Array.from(text.replace(/\r\n?/g, "\n").trim()).length;
  }

  function updateCount(area) {
    var out = document.getElementById(area.id + "-count");
    if (!out) return;
    var max = parseInt(area.getAttribute("data-charcount"), 10);
    var n = chars(area.value);
    out.textContent = n + " / " + max;
    out.classList.toggle("over", n > max);
  }

  function init(root) {
    if (!root || !root.querySelectorAll) return;
    if (root.matches && root.matches("textarea[data-charcount]")) updateCount(root);
    root.querySelectorAll("textarea[data-charcount]").forEach(updateCount);
  }

  document.addEventListener("input", function (event) {
    var el = event.target;
    if (el.matches && el.matches("textarea[data-charcount]")) updateCount(el);
  });
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt); });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy-json]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy-json"));
    if (!source) return;
    var text = JSON.stringify(JSON.parse(source.textContent), null, 2);
    var label = button.textContent;
    function done(message) {
      button.textContent = message;
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      done(ok ? "Copied" : "Copy failed; use Download JSON");
    }
  });

  // "Running for …" of unfinished tasks: the server renders the seconds so far in
  // data-elapsed; the count goes on here, in the same words as the elapsed filter.
  function durationText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60); seconds = seconds % 60;
    if (minutes < 60) return seconds ? minutes + " min " + seconds + " s" : minutes + " min";
    var hours = Math.floor(minutes / 60); minutes = minutes % 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    return Math.floor(hours / 24) + " days";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      if (!el.klingwebStart) el.klingwebStart = now - 1000 * parseInt(el.getAttribute("data-elapsed"), 10);
      el.textContent = durationText((now - el.klingwebStart) / 1000);
    });
  }
  setInterval(tick, 1000);
})();
