// Drives headless Chromium through a flamegraph the way a person would, and
// prints what it saw as one JSON object on stdout. tests/browser.rs asserts
// on that JSON; this script only clicks, types and observes.
//
//   node drive.mjs CHROMIUM svg  FILE.svg  FRAME UNRELATED TERM SHOT.png
//   node drive.mjs CHROMIUM html FILE.html FRAME TERM SHOT.png
//   node drive.mjs CHROMIUM load ROUNDS FILE.svg...
//   node drive.mjs CHROMIUM speedscope FILE.json SHOT.png
//
// svg:  clicks the widest FRAME (a function name as shown in tooltips), then
//       "Reset Zoom"; searches TERM with the Search control and again with
//       Ctrl-F. UNRELATED names a frame that must disappear while zoomed.
// html: the side-by-side page: clicks FRAME in the AFTER graph and reports
//       every graph's zoom state, then searches TERM in the BEFORE graph and
//       reports every graph's match text, then resets from the diff graph.
// load: load-event time and time of a zoom click, medians of ROUNDS.
// speedscope: opens the speedscope app shipped in its npm package, imports
//       FILE with its Browse button and reports what the page shows.
//
// Chromium runs with a fresh user-data directory and no network services.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const [executablePath, mode, ...rest] = process.argv.slice(2);
if (!executablePath || !["svg", "html", "load", "speedscope"].includes(mode)) {
  console.error("usage: node drive.mjs CHROMIUM svg|html|load|speedscope ...");
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), "fgp-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: CHROMIUM_ARGS,
  viewport: { width: 1400, height: 1000 },
});
const errors = [];
const watch = (page) => {
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()} at ${message.location().url}:${message.location().lineNumber}`);
  });
};

// Runs inside a flamegraph document: what a frame (<g>) looks like now.
const OBSERVE = `
  window.__fgp = {
    name: (g) => g.querySelector("title").textContent.replace(/ \\([^()]*\\)$/, ""),
    rect: (g) => g.querySelector("rect"),
    frames: () => [...document.querySelectorAll("#frames > g")],
    info(g) {
      const r = this.rect(g);
      const box = r.getBoundingClientRect();
      return {
        name: this.name(g),
        title: g.querySelector("title").textContent,
        x: Number(r.getAttribute("fg:x")),
        w: Number(r.getAttribute("fg:w")),
        y: Number(r.getAttribute("y")),
        width_attr: r.getAttribute("width"),
        pixel_width: box.width,
        hidden: g.classList.contains("hide") || getComputedStyle(g).display === "none",
        parent: g.classList.contains("parent"),
        fill: r.getAttribute("fill"),
      };
    },
    // The widest frame called NAME.
    widest(name) {
      const all = this.frames().filter((g) => this.name(g) === name);
      all.sort((a, b) => this.info(b).w - this.info(a).w);
      return all[0];
    },
    ancestors(g) {
      const t = this.info(g);
      return this.frames()
        .map((f) => this.info(f))
        .filter((f) => (inverted ? f.y < t.y : f.y > t.y) && f.x <= t.x && f.x + f.w >= t.x + t.w)
        .sort((a, b) => (inverted ? a.y - b.y : b.y - a.y));
    },
    state(name) {
      const g = name ? this.widest(name) : undefined;
      const visible = (id) => {
        const e = document.getElementById(id);
        return !!e && !e.classList.contains("hide") && getComputedStyle(e).display !== "none";
      };
      const infos = this.frames().map((f) => this.info(f));
      return {
        target: g ? this.info(g) : null,
        ancestors: g ? this.ancestors(g) : [],
        frames_width: document.getElementById("frames").getBoundingClientRect().width,
        frames: infos.length,
        hidden_frames: infos.filter((f) => f.hidden).length,
        unzoom_visible: visible("unzoom"),
        search_text: document.getElementById("search").textContent,
        matched_visible: visible("matched"),
        matched_text: document.getElementById("matched").textContent,
        highlighted: infos.filter((f) => f.fill === searchcolor && !f.hidden).map((f) => f.name),
      };
    },
  };
`;

const settle = (page) =>
  page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));

async function observe(frame, name) {
  await frame.evaluate(OBSERVE);
  return frame.evaluate((n) => window.__fgp.state(n), name);
}

// A real mouse click in the middle of an element (the page's coordinates).
async function clickCenter(page, handle) {
  const box = await handle.boundingBox();
  if (!box) throw new Error("element has no box (hidden?)");
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  await settle(page);
}

async function frameRect(frame, name) {
  await frame.evaluate(OBSERVE);
  const handle = await frame.evaluateHandle((n) => {
    const g = window.__fgp.widest(n);
    return g ? g.querySelector("rect") : null;
  }, name);
  const element = handle.asElement();
  if (!element) throw new Error(`no frame named ${name}`);
  return element;
}

async function searchWith(page, frame, how, term) {
  page.once("dialog", (dialog) => dialog.accept(term));
  if (how === "control") {
    await clickCenter(page, await frame.$("#search"));
  } else {
    await clickCenter(page, await frame.$("#frames")); // focus the document
    await page.keyboard.press("Control+f");
    await settle(page);
  }
}

async function svgMode([file, frameName, unrelated, term, shot]) {
  const page = await context.newPage();
  watch(page);
  const started = performance.now();
  await page.goto(pathToFileURL(resolve(file)).href, { waitUntil: "load" });
  const load_ms = performance.now() - started;
  await settle(page);
  const result = { load_ms, before: await observe(page, frameName) };
  result.unrelated_before = await page.evaluate((n) => {
    const g = window.__fgp.widest(n);
    return g ? window.__fgp.info(g) : null;
  }, unrelated);

  await clickCenter(page, await frameRect(page, frameName));
  result.zoomed = await observe(page, frameName);
  result.unrelated_zoomed = await page.evaluate((n) => {
    const g = window.__fgp.widest(n);
    return g ? window.__fgp.info(g) : null;
  }, unrelated);
  await page.screenshot({ path: shot });

  await clickCenter(page, await page.$("#unzoom"));
  result.reset = await observe(page, frameName);

  await searchWith(page, page, "control", term);
  result.searched = await observe(page, frameName);
  // The Search control turns into "Reset Search"; clicking it clears.
  await clickCenter(page, await page.$("#search"));
  result.search_cleared = await observe(page, frameName);
  await searchWith(page, page, "keyboard", term);
  result.ctrl_f = await observe(page, frameName);
  await page.close();
  return result;
}

async function htmlMode([file, frameName, term, shot]) {
  const page = await context.newPage();
  watch(page);
  const started = performance.now();
  await page.goto(pathToFileURL(resolve(file)).href, { waitUntil: "load" });
  await page.waitForFunction(() => window.flamegraphsReady === true, null, { timeout: 20000 });
  const load_ms = performance.now() - started;
  await settle(page);
  const graphs = ["before", "after", "diff"];
  const frameOf = async (id) => (await page.$(`iframe#${id}`)).contentFrame();
  const all = async (name) => {
    const out = {};
    for (const id of graphs) out[id] = await observe(await frameOf(id), name);
    return out;
  };
  const result = { load_ms, graphs: {} };
  result.initial = await all(frameName);
  await clickCenter(page, await frameRect(await frameOf("after"), frameName));
  await settle(page);
  result.zoomed = await all(frameName);
  // Grow the viewport to the page instead of a full-page capture, whose
  // temporary relayout squeezes the graphs' frames to nothing.
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 1400, height: Math.min(Math.max(height, 600), 4000) });
  await settle(page);
  await page.screenshot({ path: shot });
  const before = await frameOf("before");
  await searchWith(page, before, "control", term);
  await settle(page);
  result.searched = await all(frameName);
  await clickCenter(page, await (await frameOf("diff")).$("#unzoom"));
  await settle(page);
  result.reset = await all(frameName);
  await page.close();
  return result;
}

async function loadMode([roundsArg, ...files]) {
  const rounds = Number(roundsArg);
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const out = [];
  for (const file of files) {
    const loads = [];
    const zooms = [];
    let frames = 0;
    for (let round = 0; round < rounds; round++) {
      const page = await context.newPage();
      watch(page);
      const started = performance.now();
      await page.goto(pathToFileURL(resolve(file)).href, { waitUntil: "load" });
      loads.push(performance.now() - started);
      frames = await page.evaluate(() => document.querySelectorAll("#frames > g").length);
      // Click the widest frame below the root and wait for the repaint.
      const zoomed = await page.evaluate(async () => {
        const frames = [...document.querySelectorAll("#frames > g")];
        const width = (g) => Number(g.querySelector("rect")?.getAttribute("fg:w") ?? 0);
        const candidates = frames
          .filter((g) => !g.querySelector("title")?.textContent.startsWith("all "))
          .sort((a, b) => width(b) - width(a));
        if (!candidates[0]) return -1;
        const t0 = performance.now();
        candidates[0].dispatchEvent(new MouseEvent("click", { bubbles: true }));
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
        return performance.now() - t0;
      });
      if (zoomed >= 0) zooms.push(zoomed);
      await page.close();
    }
    out.push({ file, load_ms: median(loads), zoom_ms: zooms.length ? median(zooms) : null, frames });
  }
  return out;
}

async function speedscopeMode([file, shot]) {
  const page = await context.newPage();
  watch(page);
  const app = new URL("node_modules/speedscope/dist/release/index.html", import.meta.url);
  await page.goto(app.href, { waitUntil: "load" });
  const chooser = page.waitForEvent("filechooser");
  await page.locator("text=Browse").last().click();
  await (await chooser).setFiles(resolve(file));
  await page.waitForFunction(() => !document.body.innerText.includes("Drag and drop"), null, {
    timeout: 20000,
  });
  await settle(page);
  await page.screenshot({ path: shot });
  const result = await page.evaluate(() => ({
    text: document.body.innerText.slice(0, 2000),
    canvases: document.querySelectorAll("canvas").length,
  }));
  await page.close();
  return result;
}

let result;
try {
  if (mode === "svg") result = await svgMode(rest);
  else if (mode === "speedscope") result = await speedscopeMode(rest);
  else if (mode === "html") result = await htmlMode(rest);
  else result = await loadMode(rest);
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify({ result, errors }, null, 1));
