// The before/after viewer of index.html: a wipe slider between two views of one test image
// and two zoom panes on the same region (the reader clicks the image to move it).
(function () {
  "use strict";
  const sets = JSON.parse(document.getElementById("cmp-data").textContent).sets;
  const $ = (id) => document.getElementById(id);
  const pick = { image: $("cmp-image"), left: $("cmp-left"), right: $("cmp-right") };
  const stage = $("cmp-stage"), slider = $("cmp-slider"), zoom = $("cmp-zoom");
  const PANE = 256;
  let focus = [0, 0];

  const current = () => sets[Number(pick.image.value)];
  const view = (label) => current().views.find((v) => v.label === label);
  const named = (v) => v.label + (v.psnr === null ? "" : " (" + v.psnr.toFixed(2) + " dB)");

  function defaults(set) {
    const scored = set.views.filter((v) => v.psnr !== null && v.label !== "interp-bicubic");
    const best = scored.reduce((a, b) => (b.psnr > a.psnr ? b : a), scored[0] || set.views[0]);
    const floor = set.views.find((v) => v.label === "interp-bicubic") || set.views[1] || best;
    return [floor.label, best.label];
  }

  function chooseImage() {
    const set = current();
    const keep = [pick.left.value, pick.right.value];
    const [left, right] = defaults(set);
    for (const side of ["left", "right"]) {
      pick[side].length = 0;
      for (const v of set.views) pick[side].add(new Option(named(v), v.label));
    }
    const has = (label) => set.views.some((v) => v.label === label);
    pick.left.value = has(keep[0]) && keep[0] !== keep[1] ? keep[0] : left;
    pick.right.value = has(keep[1]) && keep[0] !== keep[1] ? keep[1] : right;
    focus = set.focus.slice();
    show();
  }

  function show() {
    const set = current();
    const free = document.querySelector(".viewer").clientWidth - 280; // beside the zooms
    const room = Math.max(set.width, Math.min(free, 512));
    const k = Math.max(1, Math.floor(room / set.width));
    stage.style.width = set.width * k + "px";
    stage.style.height = set.height * k + "px";
    slider.style.width = stage.style.width;
    $("cmp-left-img").src = view(pick.left.value).src;
    $("cmp-right-img").src = view(pick.right.value).src;
    $("cmp-left-tag").textContent = named(view(pick.left.value));
    $("cmp-right-tag").textContent = named(view(pick.right.value));
    wipe();
    magnify();
  }

  function wipe() {
    const p = Number(slider.value);
    $("cmp-left-img").style.clipPath = "inset(0 " + (100 - p) + "% 0 0)";
    $("cmp-divider").style.left = p + "%";
  }

  function magnify() {
    const set = current(), z = Number(zoom.value);
    const side = Math.min(PANE / z, set.width, set.height);
    const clamp = (c, n) => Math.min(Math.max(c - side / 2, 0), n - side);
    const x0 = clamp(focus[0], set.width), y0 = clamp(focus[1], set.height);
    const scale = PANE / side;
    for (const which of ["left", "right"]) {
      const pane = $("cmp-zoom-" + which), v = view(pick[which].value);
      pane.style.backgroundImage = 'url("' + v.src + '")';
      pane.style.backgroundSize = set.width * scale + "px " + set.height * scale + "px";
      pane.style.backgroundPosition = -x0 * scale + "px " + -y0 * scale + "px";
      $("cmp-zoom-" + which + "-tag").textContent = named(v);
    }
    const box = $("cmp-box").style;
    box.left = (100 * x0) / set.width + "%";
    box.top = (100 * y0) / set.height + "%";
    box.width = (100 * side) / set.width + "%";
    box.height = (100 * side) / set.height + "%";
  }

  stage.addEventListener("click", (e) => {
    const r = stage.getBoundingClientRect(), set = current();
    focus = [((e.clientX - r.left) / r.width) * set.width, ((e.clientY - r.top) / r.height) * set.height];
    magnify();
  });
  slider.addEventListener("input", wipe);
  zoom.addEventListener("change", magnify);
  pick.image.addEventListener("change", chooseImage);
  pick.left.addEventListener("change", show);
  pick.right.addEventListener("change", show);
  sets.forEach((s, i) => pick.image.add(new Option(s.test_set + " — " + s.image, String(i))));
  chooseImage();
})();
