// A model's requests and tokens per day, drawn from the usage report the page embeds.
(function () {
  "use strict";

  const series = JSON.parse(document.getElementById("usage-data").textContent);
  new window.Chart(document.getElementById("usage-chart"), {
    data: {
      labels: series.map((day) => day.date.slice(5)),
      datasets: [
        {
          type: "bar",
          label: "Requests",
          data: series.map((day) => day.requests),
          backgroundColor: "#3451c7",
          yAxisID: "requests",
        },
        {
          type: "line",
          label: "Tokens",
          data: series.map((day) => day.tokens),
          borderColor: "#d9480f",
          backgroundColor: "#d9480f",
          pointRadius: 2,
          yAxisID: "tokens",
        },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        requests: { position: "left", beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "Requests" } },
        tokens: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "Tokens" } },
      },
      plugins: { legend: { position: "bottom" } },
    },
  });
})();
