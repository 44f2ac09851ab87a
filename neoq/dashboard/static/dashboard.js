// neoq dashboard: the live refresh. Polls the JSON API every few seconds and updates the page
// in place. Values go in through textContent and DOM properties only, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var every = (parseInt(body.getAttribute("data-refresh"), 10) || 2) * 1000;

  function get(url, done) {
    var request = new XMLHttpRequest();
    request.open("GET", url);
    request.setRequestHeader("Accept", "application/json");
    request.onload = function () {
      if (request.status === 200) {
        try { done(JSON.parse(request.responseText)); } catch (e) { /* a bad answer: try again later */ }
      }
    };
    request.send();
  }

  function cell(text, href) {
    var td = document.createElement("td");
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function percent(value) {
    return value === null || value === undefined ? "-" : (value * 100).toFixed(0) + "%";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    var s = Math.floor(seconds);
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m"; }
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }

  var STATUSES = ["new", "running", "processed", "failed", "cancelled"];

  function queueRow(tbody, queue) {
    // A queue that got its first job since the page loaded: a row like the server's.
    var jobs = body.getAttribute("data-jobs-url");
    var tr = document.createElement("tr");
    tr.setAttribute("data-queue", queue.name);
    tr.appendChild(cell(queue.name, jobs + "?queue=" + encodeURIComponent(queue.name)));
    STATUSES.forEach(function (status) {
      var td = document.createElement("td");
      td.className = "num";
      var a = document.createElement("a");
      a.setAttribute("data-count", status);
      a.href = jobs + "?queue=" + encodeURIComponent(queue.name) + "&status=" + status;
      td.appendChild(a);
      tr.appendChild(td);
    });
    var oldest = document.createElement("td");
    oldest.className = "num";
    oldest.setAttribute("data-oldest", "");
    tr.appendChild(oldest);
    tbody.appendChild(tr);
  }

  function overview(data) {
    var queuesBody = document.querySelector("#queues tbody");
    data.queues.forEach(function (queue) {
      if (!queuesBody) { return; }
      var known = false;
      var present = queuesBody.querySelectorAll("tr[data-queue]");
      for (var k = 0; k < present.length; k++) {
        if (present[k].getAttribute("data-queue") === queue.name) { known = true; }
      }
      if (!known) { queueRow(queuesBody, queue); }
      var rows = document.querySelectorAll("#queues tr[data-queue]");
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].getAttribute("data-queue") !== queue.name) { continue; }
        var links = rows[i].querySelectorAll("[data-count]");
        for (var j = 0; j < links.length; j++) {
          var status = links[j].getAttribute("data-count");
          var estimated = queue.estimated && status !== "new" && status !== "running";
          links[j].textContent = (estimated ? "~" : "") + queue.counts[status];
        }
        var oldest = rows[i].querySelector("[data-oldest]");
        if (oldest) { oldest.textContent = age(queue.oldest_age); }
      }
    });
    var tbody = document.querySelector("#running tbody");
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    if (!data.running.length) {
      var none = document.createElement("tr");
      none.className = "none";
      var td = cell("Nothing is running.");
      td.colSpan = 5;
      none.appendChild(td);
      tbody.appendChild(none);
    }
    data.running.forEach(function (job) {
      var tr = document.createElement("tr");
      tr.appendChild(cell(job.id, job.url));
      tr.appendChild(cell(job.queue));
      var progress = cell("");
      if (job.progress !== null && job.progress !== undefined) {
        var bar = document.createElement("progress");
        bar.max = 1;
        bar.value = job.progress;
        progress.appendChild(bar);
        progress.appendChild(document.createTextNode(" " + percent(job.progress)));
      } else {
        progress.textContent = "-";
      }
      tr.appendChild(progress);
      tr.appendChild(cell(job.note || ""));
      tr.appendChild(cell(job.started || "-"));
      tbody.appendChild(tr);
    });
  }

  function job(data) {
    var status = document.getElementById("job-status");
    if (status) {
      status.textContent = data.status;
      status.className = "status " + data.status;
    }
    var bar = document.getElementById("job-progress");
    if (bar) { bar.value = data.progress || 0; }
    var text = document.getElementById("job-progress-text");
    if (text) { text.textContent = data.progress === null ? "-" : (data.progress * 100).toFixed(1) + "%"; }
    var fields = { "job-progress-note": data.progress_note || "", "job-attempts": String(data.attempts),
                   "job-error": data.error || "-", "job-traceback": data.traceback || "-",
                   "job-result": data.result === null ? "-" : data.result };
    Object.keys(fields).forEach(function (id) {
      var element = document.getElementById(id);
      if (element) { element.textContent = fields[id]; }
    });
    var times = document.querySelectorAll("[data-time]");
    for (var i = 0; i < times.length; i++) {
      var value = data.times[times[i].getAttribute("data-time")];
      times[i].textContent = value || "-";
    }
  }

  function tick() {
    var live = body.getAttribute("data-live");
    if (live === "overview") { get(body.getAttribute("data-api-overview"), overview); }
    if (live === "job") { get(body.getAttribute("data-api-job"), job); }
  }

  if (body.getAttribute("data-live")) { setInterval(tick, every); }
})();
