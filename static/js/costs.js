// Draws the cost charts from the figures the page embeds; the tables beside them hold the same numbers.
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("costs-data");
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var colors = { by_day: "#3b5bdb", by_person: "#2b8a3e", by_model: "#e67700" };
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var key = canvas.getAttribute("data-chart");
      var series = data[key];
      if (!series) return;
      var horizontal = key !== "by_day";
      new Chart(canvas, {
        type: "bar",
        data: {
          labels: series.labels,
          datasets: [{ label: "Credits", data: series.credits, backgroundColor: colors[key] }]
        },
        options: {
          indexAxis: horizontal ? "y" : "x",
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          plugins: { legend: { display: false } },
          scales: { x: { beginAtZero: true }, y: { beginAtZero: true } }
        }
      });
      canvas.setAttribute("data-drawn", "true");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
