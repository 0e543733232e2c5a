/* hubfleet console: charts (Plotly, from the JSON API), the "Run check" button, copying a new token.
   Everything else works without JavaScript.
   Loaded from /static (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function describeError(body, response) {
    var detail = body && body.detail;
    if (typeof detail === "string" && detail) return detail;
    if (detail) return JSON.stringify(detail);
    return "HTTP " + response.status + (response.statusText ? " " + response.statusText : "");
  }

  // ------------------------------------------------------------------ charts

  var LABELS = {
    dau: "daily active",
    wau: "weekly active",
    mau: "monthly active",
    mean_latency_ms: "mean latency",
    max_latency_ms: "slowest probe",
    uptime_percent: "uptime",
    mean_spawn_seconds: "mean spawn time",
    spawns: "spawns",
    failures: "failed spawns"
  };
  // columns drawn as bars on a second y axis (counts next to a duration)
  var SECONDARY = { spawns: true, failures: true };
  var COLOURS = ["#1d5fbf", "#d9730d", "#23884a", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d", "#b7950b"];

  // The API's times are UTC ISO strings; Plotly ignores zones, so give it UTC wall time.
  function plotlyTime(value) {
    if (typeof value !== "string") return value;
    return value.replace("T", " ").replace(/(Z|[+-]00:?00)$/, "");
  }

  function showMessage(el, text, isError) {
    var box = document.createElement("p");
    box.className = "chart-message" + (isError ? " error" : "");
    box.textContent = text;
    el.appendChild(box);
  }

  function hasValues(rows) {
    for (var i = 0; i < rows.length; i++) {
      for (var j = 1; j < rows[i].length; j++) {
        if (rows[i][j] !== null && rows[i][j] !== undefined) return true;
      }
    }
    return false;
  }

  function buildFigure(chart) {
    var columns = chart.columns || [];
    var rows = chart.rows || [];
    var x = rows.map(function (row) { return plotlyTime(row[0]); });
    var traces = [];
    var useSecondary = false;
    for (var c = 1; c < columns.length; c++) {
      var name = columns[c];
      var secondary = SECONDARY[name] === true && columns.length > 2;
      useSecondary = useSecondary || secondary;
      var colour = COLOURS[(c - 1) % COLOURS.length];
      var trace = {
        x: x,
        y: rows.map(function (row) { return row[c]; }),
        name: LABELS[name] || name.replace(/_/g, " "),
        connectgaps: false,
        hovertemplate: "%{y}<extra>%{fullData.name}</extra>"
      };
      if (secondary) {
        trace.type = "bar";
        trace.yaxis = "y2";
        trace.opacity = 0.35;
        trace.marker = { color: colour };
      } else {
        trace.type = "scatter";
        trace.mode = rows.length > 60 ? "lines" : "lines+markers";
        trace.line = { color: colour, width: 2 };
        trace.marker = { size: 4 };
      }
      traces.push(trace);
    }
    var layout = {
      margin: { l: 52, r: useSecondary ? 52 : 16, t: 8, b: 36 },
      height: 260,
      font: { family: "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", size: 12, color: "#1c2330" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hovermode: "x unified",
      showlegend: traces.length > 1,
      legend: { orientation: "h", y: -0.18, x: 0 },
      xaxis: { type: "date", nticks: 5, tickangle: 0, gridcolor: "#eef1f5", linecolor: "#d5dae1", automargin: true },
      yaxis: { title: { text: chart.y_title || "" }, rangemode: "tozero", gridcolor: "#eef1f5", zeroline: false },
      barmode: "overlay"
    };
    if (chart.name === "uptime") layout.yaxis.range = [0, 100.5];
    if (useSecondary) {
      layout.yaxis2 = {
        title: { text: "count" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false,
        tickmode: "auto", automargin: true
      };
    }
    if (traces.length > 1) layout.margin.b = 60;
    return { traces: traces, layout: layout };
  }

  function drawChart(el) {
    var src = el.getAttribute("data-src");
    el.setAttribute("aria-busy", "true");
    var done = function (state) {
      el.removeAttribute("aria-busy");
      el.setAttribute("data-drawn", state);
    };
    fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (!response.ok) throw new Error(describeError(body, response));
          return body;
        });
      })
      .then(function (chart) {
        var rows = chart.rows || [];
        if (!rows.length || !hasValues(rows)) {
          showMessage(el, "No data yet for this period.");
          el.classList.add("chart-empty");
          done("true");
          return null;
        }
        if (!window.Plotly) throw new Error("the chart library did not load");
        var figure = buildFigure(chart);
        return window.Plotly.newPlot(el, figure.traces, figure.layout, {
          displaylogo: false,
          responsive: true,
          modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
        }).then(function () { done("true"); });
      })
      .catch(function (error) {
        showMessage(el, "Could not load this chart: " + error.message, true);
        done("error");
      });
  }

  function drawCharts() {
    var charts = document.querySelectorAll(".chart[data-src]");
    for (var i = 0; i < charts.length; i++) drawChart(charts[i]);
  }

  // ------------------------------------------------------------------ run check

  function formatSeconds(value) {
    return typeof value === "number" ? value.toFixed(1) + " s" : "?";
  }

  function reloadChecks() {
    return fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("checks-table");
        var current = document.getElementById("checks-table");
        if (fresh && current) current.replaceWith(fresh);
      });
  }

  function setupRunCheck() {
    var button = document.getElementById("run-check");
    if (!button) return;
    var result = document.getElementById("check-result");
    button.addEventListener("click", function () {
      var hub = button.getAttribute("data-hub");
      var label = button.textContent;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      button.textContent = "Running…";
      result.className = "check-result";
      result.textContent = "Running the check; this takes 5 to 15 seconds…";
      fetch("/api/hubs/" + encodeURIComponent(hub) + "/checks", {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() }
      })
        .then(function (response) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            if (!response.ok) throw new Error(describeError(body, response));
            return body;
          });
        })
        .then(function (check) {
          if (check.ok) {
            result.className = "check-result ok";
            result.textContent = "Check passed in " + formatSeconds(check.total_seconds) + ".";
          } else {
            result.className = "check-result failed";
            result.textContent = "Check failed at step “" + (check.failed_step || "?") + "” after " +
              formatSeconds(check.total_seconds) + (check.error ? ": " + check.error : ".");
          }
          return reloadChecks();
        })
        .catch(function (error) {
          result.className = "check-result failed";
          result.textContent = "Could not run the check: " + error.message;
        })
        .then(function () {
          button.disabled = false;
          button.removeAttribute("aria-busy");
          button.textContent = label;
        });
    });
  }

  // ------------------------------------------------------------------ copy a new token

  function setupCopy() {
    var buttons = document.querySelectorAll("button[data-copy]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        var input = document.querySelector(button.getAttribute("data-copy"));
        var status = button.parentElement.querySelector(".copy-status");
        if (!input) return;
        var say = function (text) { if (status) status.textContent = text; };
        var fallback = function () {
          input.focus();
          input.select();
          var copied = false;
          try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
          say(copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.");
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(function () { say("Copied."); }, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  function start() {
    setupRunCheck();
    setupCopy();
    drawCharts();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
