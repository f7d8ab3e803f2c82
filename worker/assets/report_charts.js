/* imgmod's report charts: draws worker.report_data's figures (chart_json) with Chart.js.
 *
 * Shared by the HTML report (imgmod report --html, everything inlined) and the review page's
 * dashboard (served as a static asset). Each chart goes into the <canvas data-chart="NAME">
 * found under `root`; a missing canvas is skipped, so a page may show a subset.
 *
 *   imgmodCharts.draw(figures, document)   // returns {name: Chart}
 *
 * No animation: a printed or screenshotted page shows the final picture at once.
 */
(function (global) {
  "use strict";

  var RISK_COLOURS = {high: "#c62828", medium: "#ef6c00", low: "#f9a825", none: "#2e7d32",
                      unknown: "#9e9e9e"};
  var STATE_COLOURS = {pending: "#90a4ae", queued: "#64b5f6", running: "#1e88e5", done: "#2e7d32",
                       failed: "#c62828", rejected: "#8d6e63"};
  var DECISION_COLOURS = {block: "#c62828", review: "#ef6c00", pass: "#2e7d32",
                          unscanned: "#9e9e9e"};
  // Light to dark blue for confidence 0-10 ... 90-100, grey for "no confidence".
  var BUCKET_COLOURS = ["#e3f2fd", "#bbdefb", "#90caf9", "#64b5f6", "#42a5f5", "#2196f3",
                        "#1e88e5", "#1976d2", "#1565c0", "#0d47a1", "#bdbdbd"];
  var FALLBACK = "#607d8b";
  // A count axis: from zero, whole numbers only.
  var WHOLE = {beginAtZero: true, ticks: {precision: 0}};

  function colour(map, key) { return map[key] || FALLBACK; }
  function keys(counts) { return counts.map(function (c) { return c.key; }); }
  function values(counts) { return counts.map(function (c) { return c.value; }); }

  function base(extra) {
    var options = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: {legend: {display: false}},
    };
    return Object.assign(options, extra || {});
  }

  function counts(canvas, list, palette, horizontal) {
    return new global.Chart(canvas, {
      type: "bar",
      data: {labels: keys(list), datasets: [{
        data: values(list),
        backgroundColor: keys(list).map(function (k) { return colour(palette, k); }),
      }]},
      options: base({indexAxis: horizontal ? "y" : "x",
                     scales: horizontal ? {x: WHOLE} : {y: WHOLE}}),
    });
  }

  var CHARTS = {
    states: function (canvas, f) { return counts(canvas, f.states, STATE_COLOURS, true); },
    risks: function (canvas, f) {
      return new global.Chart(canvas, {
        type: "doughnut",
        data: {labels: keys(f.risks), datasets: [{
          data: values(f.risks),
          backgroundColor: keys(f.risks).map(function (k) { return colour(RISK_COLOURS, k); }),
        }]},
        options: base({plugins: {legend: {display: true, position: "right"}}}),
      });
    },
    labels: function (canvas, f) {
      return new global.Chart(canvas, {
        type: "bar",
        data: {
          labels: f.labels.map(function (l) { return l.label; }),
          datasets: f.bucket_names.map(function (name, i) {
            return {label: name, backgroundColor: BUCKET_COLOURS[i] || FALLBACK,
                    data: f.labels.map(function (l) { return l.histogram[i]; })};
          }),
        },
        options: base({indexAxis: "y",
                       plugins: {legend: {display: true, position: "bottom",
                                          title: {display: true, text: "confidence"}}},
                       scales: {x: Object.assign({stacked: true}, WHOLE), y: {stacked: true}}}),
      });
    },
    decisions: function (canvas, f) {
      var names = [];
      f.decisions.forEach(function (p) {
        p.counts.forEach(function (c) { if (names.indexOf(c.key) < 0) names.push(c.key); });
      });
      return new global.Chart(canvas, {
        type: "bar",
        data: {
          labels: f.decisions.map(function (p) { return p.policy + " " + p.version; }),
          datasets: names.map(function (name) {
            return {label: name, backgroundColor: colour(DECISION_COLOURS, name),
                    data: f.decisions.map(function (p) {
                      var hit = p.counts.filter(function (c) { return c.key === name; })[0];
                      return hit ? hit.value : 0;
                    })};
          }),
        },
        options: base({indexAxis: "y", plugins: {legend: {display: true, position: "bottom"}},
                       scales: {x: Object.assign({stacked: true}, WHOLE), y: {stacked: true}}}),
      });
    },
    failures: function (canvas, f) { return counts(canvas, f.failures, {}, false); },
    timeline: function (canvas, f) {
      return new global.Chart(canvas, {
        type: "bar",
        data: {
          labels: f.timeline.map(function (p) { return p.label; }),
          datasets: [
            {type: "bar", label: "answers", yAxisID: "calls", backgroundColor: "#1e88e5",
             data: f.timeline.map(function (p) { return p.answers; })},
            {type: "bar", label: "failures", yAxisID: "calls", backgroundColor: "#c62828",
             data: f.timeline.map(function (p) { return p.failures; })},
            {type: "line", label: "calls per second", yAxisID: "rate", borderColor: "#2e7d32",
             backgroundColor: "#2e7d32", pointRadius: 0,
             data: f.timeline.map(function (p) { return p.per_second; })},
          ],
        },
        options: base({
          plugins: {legend: {display: true, position: "bottom"}},
          scales: {
            x: {stacked: true},
            calls: {type: "linear", position: "left", stacked: true, beginAtZero: true,
                    ticks: {precision: 0}, title: {display: true, text: "per " + f.bucket_seconds + " s"}},
            rate: {type: "linear", position: "right", beginAtZero: true,
                   grid: {drawOnChartArea: false},
                   title: {display: true, text: "calls per second"}},
          },
        }),
      });
    },
  };

  function draw(figures, root) {
    var drawn = {};
    Object.keys(CHARTS).forEach(function (name) {
      var canvas = (root || global.document).querySelector('canvas[data-chart="' + name + '"]');
      if (canvas) drawn[name] = CHARTS[name](canvas, figures);
    });
    return drawn;
  }

  // Charts are sized for the screen; a printout gets them redrawn at the paper's width.
  function resizeAll() {
    Object.values(global.Chart.instances).forEach(function (chart) { chart.resize(); });
  }
  if (global.addEventListener) {
    global.addEventListener("beforeprint", resizeAll);
    global.addEventListener("afterprint", resizeAll);
  }

  global.imgmodCharts = {draw: draw, charts: Object.keys(CHARTS)};
})(window);
