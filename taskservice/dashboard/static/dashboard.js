// taskservice dashboard: live progress on a task's page, and confirmations. No inline script (strict CSP).
"use strict";

const FINAL = ["succeeded", "failed", "cancelled"];

function setText(root, field, text) {
  const node = root.querySelector(`[data-field="${field}"]`);
  if (node) node.textContent = text;
  return node;
}

function formatTime(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "");
}

function follow(section) {
  const rendered = section.dataset.status;
  if (!window.EventSource || FINAL.includes(rendered)) return;
  const source = new EventSource(section.dataset.eventsUrl);
  // An action's own answer (its redirect and notice) must win over the reload below.
  document.addEventListener("submit", (event) => {
    if (!event.defaultPrevented) source.close();
  });
  source.addEventListener("status", (event) => {
    const task = JSON.parse(event.data);
    const badge = setText(section, "status", task.status);
    if (badge) badge.className = `status status-${task.status}`;
    const percent = task.progress === null ? (task.status === "succeeded" ? 100 : 0) : task.progress;
    const bar = section.querySelector('[data-field="progress"]');
    if (bar) bar.value = percent;
    setText(section, "progress-text", `${percent} %`);
    setText(section, "progress-message", task.progress_message || "");
    setText(section, "attempts", String(task.attempts));
    setText(section, "started-at", formatTime(task.started_at));
    setText(section, "finished-at", formatTime(task.finished_at));
    section.dataset.live = task.status;
    if (FINAL.includes(task.status)) {
      source.close();
      // The result, error and traceback are rendered by the server: show them.
      window.location.reload();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.querySelector("section.task[data-events-url]");
  if (section) follow(section);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
