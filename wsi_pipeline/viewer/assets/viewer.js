/* wsi_pipeline review view: the slide, a heatmap layer and lesion outlines in OpenSeadragon.
 * Viewport coordinates are level-0 slide pixels, so every layer is placed in slide pixels.
 * Page data (id "viewer-data"): see wsi_pipeline/viewer/page.py. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const OSD = window.OpenSeadragon;
  const $ = (id) => document.getElementById(id);
  const state = { failedTiles: 0, slide: null, heatmap: null, selected: -1, expected: 1 };

  function showStatus(text) {
    $("status").textContent = text;
    $("status").hidden = false;
  }

  function fmt(value, digits) {
    return Number(value).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  // --- side panel -------------------------------------------------------------------------------
  function fillPanel() {
    const call = $("call");
    if (data.call.text) {
      const span = document.createElement("span");
      span.className = "category";
      span.textContent = data.call.text;
      call.appendChild(span);
    }
    if (data.call.score !== null) {
      call.appendChild(document.createTextNode((data.call.text ? " · " : "") + "score " + fmt(data.call.score, 3)));
    }
    const notes = $("notes");
    const rows = [["size", `${data.slide.width} × ${data.slide.height} px`], ["µm/px", fmt(data.slide.mpp, 3)]];
    for (const [key, value] of rows.concat(data.notes)) {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = key;
      dd.textContent = value;
      notes.append(dt, dd);
    }
    $("lesion-count").textContent = `(${data.lesions.length})`;
    const list = $("lesion-list");
    if (!data.lesions.length) {
      list.outerHTML = "<p>No tumour regions found.</p>";
    }
    for (const lesion of data.lesions) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.dataset.lesion = lesion.id;
      button.innerHTML = `<b></b> <span class="cat"></span><br><span class="size"></span>`;
      button.querySelector("b").textContent = `${lesion.id + 1}.`;
      button.querySelector(".cat").textContent = lesion.category;
      button.querySelector(".size").textContent = `${fmt(lesion.maxDiameterMm, 2)} mm, ` +
        `${fmt(lesion.areaMm2, 3)} mm², confidence ${fmt(100 * lesion.confidence, 0)} %`;
      button.title = lesion.name;
      button.addEventListener("click", () => goToLesion(lesion.id));
      item.appendChild(button);
      list.appendChild(item);
    }
    if (data.heatmap) {
      $("legend-bar").style.background = `linear-gradient(to right, ${data.heatmap.legend.join(", ")})`;
      $("legend-min").textContent = fmt(data.heatmap.minProb, 2);
    } else {
      for (const id of ["toggle-heatmap", "heatmap-opacity"]) $(id).disabled = true;
      $("legend").hidden = true;
    }
  }

  if (!OSD) {
    fillPanel();
    showStatus("The viewer library did not load.");
    return;
  }

  // --- viewer and layers -----------------------------------------------------------------------
  const viewer = OSD({
    element: $("osd"),
    drawer: "canvas", // the WebGL drawer refuses file:// tiles (tainted canvas)
    showNavigationControl: false,
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    navigatorAutoFade: false,
    navigatorBackground: data.glass,
    maxZoomPixelRatio: data.mode === "server" ? 2 : 4,
    visibilityRatio: 0.8,
    animationTime: 0.5,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    crossOriginPolicy: false,
  });
  $("osd").style.background = data.glass;

  const glassUrl = (() => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 1;
    const context = canvas.getContext("2d");
    context.fillStyle = data.glass;
    context.fillRect(0, 0, 1, 1);
    return canvas.toDataURL("image/png");
  })();

  function decodeBits(text) {
    const raw = atob(text);
    const bits = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bits[i] = raw.charCodeAt(i);
    return bits;
  }

  function slideTileSource(tiles) {
    const blank = {};
    for (const [level, text] of Object.entries(tiles.blank)) blank[level] = decodeBits(text);
    return {
      width: tiles.width,
      height: tiles.height,
      tileSize: tiles.tileSize,
      tileOverlap: tiles.overlap,
      minLevel: 0,
      maxLevel: tiles.maxLevel,
      getTileUrl: function (level, x, y) {
        if (tiles.url === null) return glassUrl;
        const bits = blank[level];
        if (bits) {
          const index = y * this.getNumTiles(level).x + x;
          if ((bits[index >> 3] >> (index & 7)) & 1) return glassUrl;
        }
        return `${tiles.url}${level}/${x}_${y}.${tiles.format}`;
      },
    };
  }

  viewer.addHandler("tile-load-failed", () => {
    state.failedTiles += 1;
    showStatus(`${state.failedTiles} slide tile(s) failed to load` +
      (data.mode === "file" ? " - is the viewer_files folder beside viewer.html?" : "."));
  });
  viewer.addHandler("open-failed", (event) => showStatus(`Cannot open the slide tiles: ${event.message}`));

  function heatmapOpacity() {
    return $("toggle-heatmap").checked ? Number($("heatmap-opacity").value) / 100 : 0;
  }

  function addHeatmap() {
    if (!data.heatmap) return;
    state.expected = 2;
    viewer.addTiledImage({
      tileSource: { type: "image", url: data.heatmap.url, buildPyramid: false },
      x: data.heatmap.x,
      y: data.heatmap.y,
      width: data.heatmap.width,
      opacity: heatmapOpacity(),
      success: (event) => { state.heatmap = event.item; },
      error: (event) => showStatus(`Cannot show the heatmap: ${event.message}`),
    });
  }

  viewer.addTiledImage({
    tileSource: slideTileSource(data.tiles),
    x: 0,
    y: 0,
    width: data.tiles.width * data.tiles.level0Px,
    success: (event) => { state.slide = event.item; addHeatmap(); },
    error: (event) => showStatus(`Cannot open the slide tiles: ${event.message}`),
  });

  const updateHeatmap = () => { if (state.heatmap) state.heatmap.setOpacity(heatmapOpacity()); };
  $("toggle-heatmap").addEventListener("change", updateHeatmap);
  $("heatmap-opacity").addEventListener("input", updateHeatmap);

  // --- lesion outlines (SVG in slide pixels, re-transformed on every viewport change) -------------
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.id = "lesion-layer";
  const group = document.createElementNS(svgNS, "g");
  svg.appendChild(group);
  viewer.canvas.appendChild(svg);
  for (const lesion of data.lesions) {
    const path = document.createElementNS(svgNS, "path");
    path.setAttribute("d", lesion.path);
    path.dataset.lesion = lesion.id;
    group.appendChild(path);
  }
  $("toggle-outlines").addEventListener("change", () => { svg.style.display = $("toggle-outlines").checked ? "" : "none"; });

  function pxPerSlidePx() {
    const viewport = viewer.viewport;
    return viewport.deltaPixelsFromPointsNoRotate(new OSD.Point(1000, 0), true).x / 1000;
  }

  function updateScaleBar(scale) {
    const umPerScreenPx = data.slide.mpp / scale;
    const target = 120 * umPerScreenPx;
    const power = 10 ** Math.floor(Math.log10(target));
    const nice = [5, 2, 1].map((m) => m * power).find((v) => v <= target);
    $("scalebar-bar").style.width = `${nice / umPerScreenPx}px`;
    $("scalebar-label").textContent = nice >= 1000 ? `${nice / 1000} mm` : `${nice} µm`;
  }

  function updateOverlay() {
    const origin = viewer.viewport.pixelFromPoint(new OSD.Point(0, 0), true);
    const scale = pxPerSlidePx();
    group.setAttribute("transform", `translate(${origin.x} ${origin.y}) scale(${scale})`);
    updateScaleBar(scale);
  }
  for (const name of ["update-viewport", "open", "resize", "animation"]) viewer.addHandler(name, updateOverlay);

  // --- navigation -------------------------------------------------------------------------------
  function goToLesion(id) {
    const lesion = data.lesions.find((l) => l.id === id);
    const [x0, y0, x1, y1] = lesion.bounds;
    const minSide = 400 / data.slide.mpp; // show at least 0.4 mm around small lesions
    const width = Math.max(1.5 * (x1 - x0), minSide);
    const height = Math.max(1.5 * (y1 - y0), minSide);
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    viewer.viewport.fitBounds(new OSD.Rect(cx - width / 2, cy - height / 2, width, height));
    state.selected = id;
    for (const el of document.querySelectorAll("[data-lesion]")) {
      el.classList.toggle("selected", Number(el.dataset.lesion) === id);
    }
  }
  $("zoom-in").addEventListener("click", () => viewer.viewport.zoomBy(2).applyConstraints());
  $("zoom-out").addEventListener("click", () => viewer.viewport.zoomBy(0.5).applyConstraints());
  $("home").addEventListener("click", () => viewer.viewport.goHome());

  fillPanel();

  // --- hooks for people and tests ---------------------------------------------------------------
  /** True when every layer is open, all tiles wanted for the view are loaded and nothing moves. */
  function isIdle() {
    const viewport = viewer.viewport;
    const count = viewer.world.getItemCount();
    if (count !== state.expected || viewer.isAnimating()) return false;
    for (let i = 0; i < count; i++) if (!viewer.world.getItemAt(i).getFullyLoaded()) return false;
    const [now, target] = [viewport.getCenter(true), viewport.getCenter(false)];
    const width = viewport.getBounds(false).width;
    return Math.abs(viewport.getZoom(true) / viewport.getZoom(false) - 1) < 1e-6 &&
      Math.abs(now.x - target.x) < 1e-6 * width && Math.abs(now.y - target.y) < 1e-6 * width;
  }

  window.wsiViewer = {
    viewer,
    data,
    state,
    goToLesion,
    isIdle,
    /** Resolves once isIdle() has held for `frames` animation frames in a row. */
    settled: (frames = 5, timeoutMs = 15000) => new Promise((resolve, reject) => {
      const start = performance.now();
      let calm = 0;
      const step = () => {
        calm = isIdle() ? calm + 1 : 0;
        if (calm >= frames) resolve(true);
        else if (performance.now() - start > timeoutMs) reject(new Error("the viewer did not settle"));
        else requestAnimationFrame(step);
      };
      requestAnimationFrame(step);
    }),
    /** Levels of the slide tiles drawn in the last frame. */
    drawnLevels: () => state.slide ? state.slide.getTilesToDraw().map((info) => info.tile.level) : [],
    /** Page (CSS px) position of a level-0 slide point. */
    slideToPage: (x, y) => {
      const p = viewer.viewport.pixelFromPoint(new OSD.Point(x, y), true);
      const box = viewer.canvas.getBoundingClientRect();
      return { x: box.left + p.x, y: box.top + p.y };
    },
    center: () => { const c = viewer.viewport.getCenter(true); return { x: c.x, y: c.y }; },
    zoom: () => viewer.viewport.getZoom(true),
  };
})();
