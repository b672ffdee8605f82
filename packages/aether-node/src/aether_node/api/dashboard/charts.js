// Small line charts for the dashboard in plain SVG (no library, nothing fetched): a bounded history of
// samples kept in the tab (`History`), and `draw`, which turns named series of it into one chart with an
// axis and a legend. Pure drawing: app.js decides what is sampled and when.
"use strict";

window.AetherCharts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 300; // viewBox units: the SVG stretches to its box, strokes keep their width
  const HEIGHT = 100;
  const PALETTE = ["#0969da", "#8250df", "#1a7f37", "#bf3989", "#9a6700", "#0a7b83", "#cf222e", "#57606a"];

  // Samples {at: seconds, charts: {name: Map(series → number)}}, the last `seconds` of them.
  class History {
    constructor(seconds) {
      this.seconds = seconds;
      this.samples = [];
    }

    add(sample) {
      if (this.samples.length && sample.at <= this.samples[this.samples.length - 1].at) return;
      this.samples.push(sample);
      while (this.samples[0].at < sample.at - this.seconds) this.samples.shift();
    }

    // name → [[at, value or null (a gap: that series had no value then)], …] for one chart
    series(chart) {
      const names = new Set();
      for (const sample of this.samples) for (const name of (sample.charts[chart] ?? new Map()).keys()) names.add(name);
      const found = new Map();
      for (const name of [...names].sort()) {
        found.set(name, this.samples.map((s) => [s.at, s.charts[chart]?.get(name) ?? null]));
      }
      return found;
    }

    get first() {
      return this.samples[0]?.at ?? 0;
    }

    get last() {
      return this.samples[this.samples.length - 1]?.at ?? 0;
    }
  }

  // A stable colour per name, in order of first sight.
  class Colours {
    constructor(fixed = {}) {
      this.fixed = fixed;
      this.seen = new Map();
    }

    of(name) {
      if (name in this.fixed) return this.fixed[name];
      if (!this.seen.has(name)) this.seen.set(name, PALETTE[this.seen.size % PALETTE.length]);
      return this.seen.get(name);
    }
  }

  // The axis top: 1, 2 or 5 × a power of ten, at least `value` (and at least `floor`).
  function niceMax(value, floor = 1) {
    const wanted = Math.max(value, floor);
    const power = 10 ** Math.floor(Math.log10(wanted));
    return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= wanted);
  }

  // An SVG path through the points; a null value breaks the line.
  function pathData(points, from, seconds, top) {
    let d = "";
    let drawing = false;
    for (const [at, value] of points) {
      if (value === null || !Number.isFinite(value)) {
        drawing = false;
        continue;
      }
      const x = (((at - from) / seconds) * WIDTH).toFixed(1);
      const y = (HEIGHT - (Math.min(value, top) / top) * HEIGHT).toFixed(1);
      d += `${drawing ? "L" : "M"}${x},${y} `;
      drawing = true;
    }
    return d.trim();
  }

  function element(name, attributes = {}) {
    const made = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, String(value));
    return made;
  }

  function html(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  // Draw `series` (name → points) into `figure` (its figcaption stays): from `from` (the first sample) to
  // `to`, at most the last `seconds`. options: colours (Colours), dashed (set of names), format (value →
  // text), floor (smallest axis top).
  function draw(figure, series, options) {
    const { to, colours, dashed = new Set(), format = String, floor = 1 } = options;
    for (const old of figure.querySelectorAll(".plot, .legend, .empty")) old.remove();
    const from = Math.max(options.from, to - options.seconds);
    const seconds = Math.max(to - from, 1);
    const drawable = [...series].filter(([, points]) => points.filter(([, v]) => v !== null).length >= 2);
    if (!drawable.length) {
      figure.append(html("p", "empty", "collecting… (a line needs two readings)"));
      return;
    }
    const highest = Math.max(...drawable.flatMap(([, points]) => points.map(([, v]) => v ?? 0)));
    const top = niceMax(highest, floor);
    const plot = html("div", "plot");
    const svg = element("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img" });
    for (const fraction of [0, 0.5, 1]) {
      const y = HEIGHT * fraction;
      svg.append(element("line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "grid", "vector-effect": "non-scaling-stroke" }));
    }
    for (const [name, points] of drawable) {
      const path = element("path", {
        d: pathData(points, from, seconds, top),
        class: "series",
        fill: "none",
        stroke: colours.of(name),
        "stroke-width": 1.6,
        "vector-effect": "non-scaling-stroke",
        "data-series": name,
      });
      if (dashed.has(name)) path.setAttribute("stroke-dasharray", "4 3");
      svg.append(path);
    }
    plot.append(svg);
    plot.append(html("span", "axis top", format(top)));
    plot.append(html("span", "axis bottom", "0"));
    plot.append(html("span", "axis start", seconds >= 90 ? `−${Math.round(seconds / 60)} min` : `−${Math.round(seconds)} s`));
    plot.append(html("span", "axis end", "now"));
    figure.append(plot);
    const legend = html("ul", "legend");
    for (const [name, points] of drawable) {
      const last = [...points].reverse().find(([, v]) => v !== null)?.[1];
      const item = html("li");
      item.title = `${name}: ${format(last)} (last reading)`;
      const swatch = element("svg", { width: 10, height: 10, class: "swatch" });
      swatch.append(element("rect", { width: 10, height: 10, fill: colours.of(name) }));
      item.append(swatch, html("span", "name", name), html("span", "value", format(last)));
      legend.append(item);
    }
    figure.append(legend);
  }

  return { History, Colours, draw, niceMax, pathData };
})();
