// A job's live view: the loss chart grows as metric points arrive over the job's
// Server-Sent Events stream, and the timeline, progress and ETA follow its events.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("job-data").textContent);
  const colors = ["#3451c7", "#d9480f", "#2b8a3e", "#862e9c", "#0b7285"];
  const liveState = document.getElementById("live-state");
  const emptyNote = document.getElementById("chart-empty");
  const latestText = document.getElementById("latest-metrics");
  const latest = {};
  let lastStatus = document.getElementById("job-summary").dataset.status;

  const isLoss = (name) => name.endsWith("loss");
  const label = (name) => name.replace(/_/g, " ");

  const chart = new window.Chart(document.getElementById("loss-chart"), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "Step" } },
        y: { title: { display: true, text: "Loss" } },
      },
      plugins: { legend: { position: "bottom" } },
    },
  });

  function dataset(name) {
    let found = chart.data.datasets.find((d) => d.metric === name);
    if (!found) {
      const color = colors[chart.data.datasets.length % colors.length];
      found = {
        metric: name,
        label: label(name),
        data: [],
        borderColor: color,
        backgroundColor: color,
        pointRadius: 2,
        borderWidth: 2,
        tension: 0.2,
      };
      chart.data.datasets.push(found);
    }
    return found;
  }

  function addPoint(name, step, value) {
    latest[name] = value;
    if (!isLoss(name)) return;
    dataset(name).data.push({ x: step, y: value });
    emptyNote.hidden = true;
  }

  Object.entries(data.series).forEach(([name, points]) =>
    points.forEach(([step, value]) => addPoint(name, step, value))
  );
  chart.update();

  function renderLatest() {
    const format = (v) => (v !== 0 && Math.abs(v) < 0.001 ? v.toExponential(2) : v.toFixed(4));
    const parts = Object.entries(latest).map(([k, v]) => label(k) + " " + format(v));
    if (parts.length) latestText.textContent = parts.join(" · ");
  }

  function eta(iso) {
    if (!iso) return "—";
    const when = new Date(iso);
    const minutes = Math.round((when - Date.now()) / 60000);
    const clock = when.toISOString().slice(0, 16).replace("T", " ") + " UTC";
    if (minutes <= 0) return "any moment (" + clock + ")";
    return "in about " + minutes + " min (" + clock + ")";
  }

  function showStatus(job) {
    const progress = document.getElementById("job-progress");
    if (progress) {
      const value = Math.round(job.progress_percentage);
      progress.value = job.progress_percentage;
      progress.textContent = value + "%";
      document.getElementById("job-progress-value").textContent = value + "%";
      document.getElementById("job-eta").textContent = eta(job.estimated_finish);
      const tokens = document.getElementById("job-tokens");
      if (job.trained_tokens != null) tokens.textContent = job.trained_tokens.toLocaleString("en-US");
    }
    if (job.status !== lastStatus) {
      lastStatus = job.status;
      window.htmx.ajax("GET", data.summary, { target: "#job-summary", swap: "outerHTML" });
    }
  }

  function addEvent(event) {
    const timeline = document.getElementById("timeline");
    const placeholder = timeline.querySelector("li.muted");
    if (placeholder) placeholder.remove();
    const item = document.createElement("li");
    item.className = "event level-" + event.level;
    const time = document.createElement("time");
    time.dateTime = event.created_at;
    time.textContent = event.created_at.slice(0, 16).replace("T", " ") + " UTC";
    const type = document.createElement("span");
    type.className = "event-type";
    type.textContent = label(event.type);
    item.append(time, " ", type, " ", event.message);
    timeline.prepend(item);
  }

  if (!data.active) return;
  const terminal = new Set(["succeeded", "failed", "cancelled"]);
  const source = new EventSource(data.stream + "?last_event_id=" + encodeURIComponent(data.cursor));
  source.addEventListener("open", () => {
    liveState.textContent = "Live: updates appear as training reports them";
  });
  source.addEventListener("metric", (message) => {
    const point = JSON.parse(message.data);
    addPoint(point.name, point.step, point.value);
    chart.update("none");
    renderLatest();
  });
  source.addEventListener("event", (message) => addEvent(JSON.parse(message.data)));
  source.addEventListener("status", (message) => {
    const job = JSON.parse(message.data);
    showStatus(job);
    if (terminal.has(job.status)) {
      source.close();
      liveState.textContent = "Training " + job.status;
    }
  });
  source.addEventListener("error", () => {
    liveState.textContent =
      source.readyState === EventSource.CLOSED
        ? "Live updates stopped; reload the page to resume"
        : "Connection lost; reconnecting…";
  });
})();
