// Pen strokes -> a 28x28 MNIST-style image: the JavaScript twin of helpers/digits.py.
//
// MNIST's digits were made by cropping the ink to its bounding box, scaling it to fit 20x20 (keeping the aspect
// ratio, anti-aliased) and translating it so its centre of mass sits at the centre of a 28x28 frame. This file does
// the same to what the learner draws, with the same float64 operations in the same order as the Python twin, so
// both give the same array bit for bit (tests/test_browser.py checks it in Node.js and in Chromium).
//
// A stroke is an array of [x, y] points in canvas pixels; the pen is a disc of radius PEN_RADIUS. Each output pixel
// is the fraction of its SUPERSAMPLE x SUPERSAMPLE sample points that the pen covered.
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory(); // Node.js (the tests)
  else root.Preprocess = factory(); // the page
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  const CANVAS_SIZE = 280, PEN_RADIUS = 10.0, BOX = 20, SIZE = 28, SUPERSAMPLE = 4;
  const GRID = SIZE * SUPERSAMPLE;
  const LIMIT = 1e6; // |coordinate| bound, in canvas pixels: keeps every intermediate finite in both twins

  function checkStrokes(strokes) {
    strokes.forEach((stroke, index) => {
      const ok = Array.isArray(stroke) && stroke.length > 0 &&
        stroke.every((p) => Array.isArray(p) && p.length === 2 && Number.isFinite(p[0]) && Number.isFinite(p[1]));
      if (!ok) throw new Error(`stroke ${index} must be a non-empty array of finite [x, y] points`);
      if (stroke.some((p) => Math.abs(p[0]) > LIMIT || Math.abs(p[1]) > LIMIT)) {
        throw new Error(`stroke ${index} has a point beyond ${LIMIT} canvas pixels`);
      }
    });
  }

  function segments(strokes) {
    const result = [];
    for (const points of strokes) {
      if (points.length === 1) result.push([points[0][0], points[0][1], points[0][0], points[0][1]]); // a dot
      for (let i = 1; i < points.length; i++) result.push([points[i - 1][0], points[i - 1][1], points[i][0], points[i][1]]);
    }
    return result;
  }

  function inkBox(strokes) {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const points of strokes) for (const [x, y] of points) {
      minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
    }
    const x0 = minX - PEN_RADIUS, y0 = minY - PEN_RADIUS;
    const width = maxX + PEN_RADIUS - x0, height = maxY + PEN_RADIUS - y0;
    const scale = BOX / Math.max(width, height);
    return { x0, y0, scale, ox: (SIZE - width * scale) / 2, oy: (SIZE - height * scale) / 2 };
  }

  // sample indices that can lie within [low, high] canvas pixels, one sample of margin each side (conservative)
  function sampleRange(low, high, origin, scale, offset) {
    const first = Math.floor(((low - origin) * scale + offset) * SUPERSAMPLE - 0.5) - 1;
    const last = Math.floor(((high - origin) * scale + offset) * SUPERSAMPLE - 0.5) + 2;
    return [Math.max(first, 0), Math.min(last, GRID)];
  }

  function coverage(strokes) {
    const { x0, y0, scale, ox, oy } = inkBox(strokes);
    const covered = new Uint8Array(GRID * GRID);
    const xs = new Float64Array(GRID), ys = new Float64Array(GRID);
    for (let s = 0; s < GRID; s++) {
      const centre = (s + 0.5) / SUPERSAMPLE;
      xs[s] = x0 + (centre - ox) / scale;
      ys[s] = y0 + (centre - oy) / scale;
    }
    const r2 = PEN_RADIUS * PEN_RADIUS;
    for (const [ax, ay, bx, by] of segments(strokes)) {
      const [c0, c1] = sampleRange(Math.min(ax, bx) - PEN_RADIUS, Math.max(ax, bx) + PEN_RADIUS, x0, scale, ox);
      const [r0, r1] = sampleRange(Math.min(ay, by) - PEN_RADIUS, Math.max(ay, by) + PEN_RADIUS, y0, scale, oy);
      const dx = bx - ax, dy = by - ay, length2 = dx * dx + dy * dy;
      for (let r = r0; r < r1; r++) {
        const y = ys[r];
        for (let c = c0; c < c1; c++) {
          const x = xs[c];
          let t = length2 > 0 ? ((x - ax) * dx + (y - ay) * dy) / length2 : 0;
          t = Math.min(1, Math.max(0, t));
          const ex = x - (ax + t * dx), ey = y - (ay + t * dy);
          if (ex * ex + ey * ey <= r2) covered[r * GRID + c] = 1;
        }
      }
    }
    const image = new Float64Array(SIZE * SIZE);
    for (let r = 0; r < GRID; r++) for (let c = 0; c < GRID; c++) {
      image[Math.floor(r / SUPERSAMPLE) * SIZE + Math.floor(c / SUPERSAMPLE)] += covered[r * GRID + c];
    }
    return image.map((count) => count / (SUPERSAMPLE * SUPERSAMPLE));
  }

  // translate by whole pixels so the centre of mass is at the frame's centre (ink shifted out is lost); an image
  // with no ink (a drawing so wide the pen falls between the samples) stays blank
  function centreByMass(image) {
    let total = 0, sumY = 0, sumX = 0;
    for (let r = 0; r < SIZE; r++) for (let c = 0; c < SIZE; c++) {
      const v = image[r * SIZE + c];
      total += v; sumY += r * v; sumX += c * v; // exact: every value is k/16
    }
    if (total === 0) return Float32Array.from(image);
    const dy = Math.floor((SIZE - 1) / 2 - sumY / total + 0.5), dx = Math.floor((SIZE - 1) / 2 - sumX / total + 0.5);
    const out = new Float32Array(SIZE * SIZE);
    for (let r = 0; r < SIZE; r++) for (let c = 0; c < SIZE; c++) {
      const tr = r + dy, tc = c + dx;
      if (tr >= 0 && tr < SIZE && tc >= 0 && tc < SIZE) out[tr * SIZE + tc] = image[r * SIZE + c];
    }
    return out;
  }

  // (28*28) Float32Array in [0, 1], row-major, MNIST style; all zeros when nothing was drawn
  function strokesToImage(strokes) {
    checkStrokes(strokes);
    if (strokes.length === 0) return new Float32Array(SIZE * SIZE);
    return centreByMass(coverage(strokes));
  }

  return { CANVAS_SIZE, PEN_RADIUS, BOX, SIZE, SUPERSAMPLE, strokesToImage };
});
