/* minigate console: charts (Apache ECharts, served from /console/static/vendor), auto-submitting selects,
   confirmation prompts. No inline script anywhere: the page's Content-Security-Policy forbids it. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  function renderCharts() {
    var boxes = document.querySelectorAll(".chart[data-option]");
    if (!boxes.length) return;
    if (typeof window.echarts === "undefined") {
      boxes.forEach(function (el) {
        el.classList.add("chart-missing");
        el.textContent = el.getAttribute("data-missing") || "Charts unavailable: run `make assets`.";
      });
      return;
    }
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var charts = [];
    boxes.forEach(function (el) {
      var option = JSON.parse(el.getAttribute("data-option"));
      var chart = window.echarts.init(el, dark ? "dark" : null, { renderer: "canvas" });
      chart.on("finished", function () { el.setAttribute("data-rendered", "true"); });
      chart.setOption(option);
      charts.push(chart);
    });
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { charts.forEach(function (c) { c.resize(); }); }, 100);
    });
  }

  function wireForms() {
    document.querySelectorAll("select.autosubmit").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }

  ready(function () { wireForms(); renderCharts(); });
})();
