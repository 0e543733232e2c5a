/* hubfleet console, cost pages: the daily cost per hub as stacked bars (Plotly, from the JSON API) and
   tables sorted by a click on their column heading. Everything else works without JavaScript.
   Loaded from /static (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  var COLOURS = ["#1d5fbf", "#d9730d", "#23884a", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d", "#b7950b"];

  function message(el, text, isError) {
    var box = document.createElement("p");
    box.className = "chart-message" + (isError ? " error" : "");
    box.textContent = text;
    el.appendChild(box);
  }

  function figure(chart) {
    var columns = chart.columns || [];
    var rows = chart.rows || [];
    var x = rows.map(function (row) { return row[0]; });
    var traces = [];
    for (var c = 1; c < columns.length; c++) {
      traces.push({
        type: "bar",
        name: columns[c],
        x: x,
        y: rows.map(function (row) { return row[c]; }),
        marker: { color: COLOURS[(c - 1) % COLOURS.length] },
        hovertemplate: "%{y:.2f} " + chart.y_title + "<extra>%{fullData.name}</extra>"
      });
    }
    var layout = {
      barmode: "relative",  // stacked; a credit (negative) goes below the axis instead of eating into the stack
      margin: { l: 60, r: 16, t: 8, b: traces.length > 1 ? 60 : 36 },
      height: 260,
      font: { family: "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", size: 12, color: "#1c2330" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hovermode: "x unified",
      showlegend: true,
      legend: { orientation: "h", y: -0.18, x: 0 },
      xaxis: { type: "date", tickformat: "%d %b", gridcolor: "#eef1f5", linecolor: "#d5dae1", automargin: true },
      yaxis: { title: { text: chart.y_title || "" }, rangemode: "tozero", gridcolor: "#eef1f5", zeroline: false }
    };
    return { traces: traces, layout: layout };
  }

  function draw(el) {
    el.setAttribute("aria-busy", "true");
    var done = function (state) {
      el.removeAttribute("aria-busy");
      el.setAttribute("data-drawn", state);
    };
    fetch(el.getAttribute("data-cost-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (!response.ok) throw new Error((body && body.detail) || "HTTP " + response.status);
          return body;
        });
      })
      .then(function (chart) {
        if (!(chart.rows || []).length || (chart.columns || []).length < 2) {
          message(el, "No costs for this month yet.");
          done("true");
          return null;
        }
        if (!window.Plotly) throw new Error("the chart library did not load");
        var fig = figure(chart);
        return window.Plotly.newPlot(el, fig.traces, fig.layout, {
          displaylogo: false,
          responsive: true,
          modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
        }).then(function () { done("true"); });
      })
      .catch(function (error) {
        message(el, "Could not load this chart: " + error.message, true);
        done("error");
      });
  }

  // ------------------------------------------------------------------ sortable tables

  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return "";
    var sort = cell.getAttribute("data-sort");
    if (sort !== null && sort !== "" && !isNaN(Number(sort))) return Number(sort);
    return cell.textContent.trim().toLowerCase();
  }

  function makeSortable(table) {
    var headings = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headings, function (th, index) {
      var label = th.innerHTML;
      th.textContent = "";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort-button";
      button.innerHTML = label;
      th.appendChild(button);
      button.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return !r.querySelector(".empty"); });
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headings, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          var order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".cost-chart[data-cost-src]"), draw);
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
