// Charts: uPlot (small, fast, canvas) for the live charts; an inline SVG
// polyline for table sparklines.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];

export interface LiveChart {
  el: HTMLElement;
  update(t: number[], ys: (number | null)[][], labels?: string[]): void;
  destroy(): void;
}

// lineChart draws one line per label; it follows its container's width.
export function lineChart(title: string, labels: string[], unit = ""): LiveChart {
  const el = document.createElement("figure");
  el.className = "chart";
  el.setAttribute("role", "img");
  el.setAttribute("aria-label", title);
  const cap = document.createElement("figcaption");
  cap.textContent = title;
  const box = document.createElement("div");
  el.append(cap, box);
  let plot: uPlot | null = null;
  let current = labels.slice();
  const make = (names: string[]) => {
    plot?.destroy();
    current = names.slice();
    plot = new uPlot(
      {
        width: Math.max(240, box.clientWidth || 600),
        height: 180,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        // One sample (a page just opened): uPlot would stretch the time
        // axis over 86400/ms s (years); show the minute before it instead.
        scales: { x: { time: true, range: (u, min, max) => (u.data[0].length === 1 ? [u.data[0][0] - 60, u.data[0][0]] : [min, max]) }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
        axes: [{}, { label: unit, size: 56 }],
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 1.5, spanGaps: true }))],
      },
      [[], ...names.map(() => [])] as uPlot.AlignedData,
      box,
    );
  };
  // Resized on the next frame, not inside the observer: a resize there
  // would re-trigger it ("ResizeObserver loop" errors).
  let frame = 0;
  const ro = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      if (plot && box.clientWidth > 0 && Math.abs(plot.width - box.clientWidth) > 1) plot.setSize({ width: box.clientWidth, height: 180 });
    });
  });
  ro.observe(box);
  return {
    el,
    update(t, ys, names) {
      if (!plot || (names && names.join("\u0000") !== current.join("\u0000"))) {
        if (!el.isConnected) return;
        make(names ?? current);
      }
      plot!.setData([t, ...ys] as uPlot.AlignedData);
      // The shown time span, in seconds, for the browser tests.
      const x = plot!.scales.x;
      el.dataset.span = String(Math.round((x.max ?? 0) - (x.min ?? 0)));
    },
    destroy() {
      cancelAnimationFrame(frame);
      ro.disconnect();
      plot?.destroy();
      plot = null;
    },
  };
}

// sparkline is a small SVG of the last values (no axes).
export function sparkline(values: number[], label: string): SVGSVGElement {
  const w = 80;
  const hgt = 20;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.classList.add("spark");
  const vs = values.slice(-40);
  if (vs.length > 1) {
    const max = Math.max(1, ...vs);
    const min = Math.min(0, ...vs);
    const pts = vs.map((v, i) => `${((i / (vs.length - 1)) * (w - 2) + 1).toFixed(1)},${(hgt - 1 - ((v - min) / (max - min || 1)) * (hgt - 2)).toFixed(1)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  return svg;
}
