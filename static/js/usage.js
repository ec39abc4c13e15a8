/* Usage charts: draw each <canvas data-chart="ID"> from the JSON in <script id="ID"> (Django's
   json_script), with the vendored Chart.js (static/vendor/chartjs). Redraws when HTMX swaps the
   report region in. Units arrive as decimal strings (exact); they become numbers only to draw.
   Every chart's numbers are also in a table on the page. */
(function () {
  "use strict";

  var FAMILY_COLORS = {
    avatar: "#3355ff",
    video_extend: "#127a3a",
    multi_shot: "#c2410c",
    text2video: "#b42318",
    image2video: "#7a3fd1",
    element: "#0e7490",
    units: "#3355ff"
  };
  var PALETTE = ["#3355ff", "#127a3a", "#c2410c", "#b42318", "#7a3fd1", "#0e7490",
                 "#a16207", "#be185d", "#4d7c0f", "#475569", "#1d4ed8", "#9333ea"];

  function colorFor(key, index, count) {
    if (FAMILY_COLORS[key]) return FAMILY_COLORS[key];
    if (count <= PALETTE.length) return PALETTE[index];
    // Many series (teams): spread hues by the golden angle so neighbours differ.
    return "hsl(" + Math.round((index * 137.508) % 360) + ", 62%, " + (index % 2 ? 38 : 50) + "%)";
  }

  function config(spec) {
    var horizontal = !!spec.horizontal;
    var stacked = !!spec.stacked;
    var valueAxis = horizontal ? "x" : "y";
    var scales = {};
    scales[horizontal ? "y" : "x"] = { stacked: stacked, grid: { display: false } };
    scales[valueAxis] = { stacked: stacked, beginAtZero: true,
                          title: { display: true, text: spec.unit || "" } };
    return {
      type: spec.type || "bar",
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (ds, i) {
          return {
            label: ds.label,
            data: ds.data.map(Number),
            backgroundColor: colorFor(ds.key, i, spec.datasets.length),
            borderWidth: 0
          };
        })
      },
      options: {
        indexAxis: horizontal ? "y" : "x",
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { display: spec.datasets.length > 1, position: "bottom" },
          tooltip: { mode: "index", intersect: false }
        },
        scales: scales
      }
    };
  }

  function draw(root) {
    if (!window.Chart || !root || !root.querySelectorAll) return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) return;
      var previous = window.Chart.getChart(canvas);
      if (previous) previous.destroy();
      try {
        new window.Chart(canvas, config(JSON.parse(source.textContent)));
      } catch (err) {
        // The table under the chart still carries the numbers.
        if (window.console) console.error("usage chart", err);
      }
    });
  }

  // The URL is the state of a report. The picker shows what the address bar says: on load,
  // when the browser shows the page again from its cache (pageshow), and after Back/Forward
  // (popstate; htmx:historyRestore), where htmx puts back a snapshot of the page whose form
  // fields still carry the choice first rendered. A parameter the URL lacks: the field's
  // data-default (the period), "" for the other selects (all kinds, members…); From/To stay.
  function syncPicker() {
    var form = document.querySelector("form.usage-picker");
    if (!form) return;
    var params = new URLSearchParams(window.location.search);
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.type === "submit" || field.type === "button") return;
      var value = params.get(field.name);
      if (value === null) {
        if (field.hasAttribute("data-default")) value = field.getAttribute("data-default");
        else if (field.tagName === "SELECT") value = "";
        else return;
      }
      if (field.tagName === "SELECT") {
        var known = Array.prototype.some.call(field.options, function (o) { return o.value === value; });
        if (known) field.value = value;
      } else {
        field.value = value;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { syncPicker(); draw(document); });
  document.addEventListener("htmx:load", function (event) { draw(event.detail.elt); });
  window.addEventListener("pageshow", syncPicker);
  window.addEventListener("popstate", function () { setTimeout(syncPicker, 0); });
  document.addEventListener("htmx:historyRestore", function () { syncPicker(); draw(document); });
})();
