// A `thumbnail` handler for a browser tab, answering like the Rust
// daemons' (docs/handlers.md): one image in file 0; params `width`,
// `height` (at least one), `fit` (contain, cover, fill), `format` (jpeg,
// png, webp) and `quality` (1–100, JPEG and WebP); the thumbnail comes back
// as a file and `{width, height, format, bytes}` as the result. Decoding
// and encoding are the browser's (createImageBitmap, OffscreenCanvas).

const MAX_SIDE = 8192;
const KEYS = new Set(["width", "height", "fit", "format", "quality"]);

/** The box for a `src_w`×`src_h` image: the size, and whether to crop. */
export function targetSize(srcW, srcH, { width, height, fit }) {
  if (fit === "cover" && width && height) return { w: width, h: height, crop: true };
  if (fit === "fill" && width && height) return { w: width, h: height, crop: false };
  // contain: inside the box, aspect kept, never larger than the source
  const scale = Math.min(1, width ? width / srcW : Infinity, height ? height / srcH : Infinity);
  return { w: Math.max(1, Math.round(srcW * scale)), h: Math.max(1, Math.round(srcH * scale)), crop: false };
}

/** Checks the job's parameters as the daemons do; throws saying what is wrong. */
export function params(input) {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw new Error("thumbnail parameters must be a JSON object");
  for (const k of Object.keys(input)) if (!KEYS.has(k)) throw new Error(`unknown thumbnail parameter \`${k}\`; allowed: width, height, fit, format, quality`);
  const side = (k) => {
    const v = input[k];
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) throw new Error(`thumbnail parameter ${k} must be an integer 1-${MAX_SIDE}`);
    return v;
  };
  const p = {
    width: side("width"),
    height: side("height"),
    fit: input.fit ?? "contain",
    format: input.format ?? "jpeg",
    quality: input.quality ?? 85,
  };
  if (!p.width && !p.height) throw new Error("thumbnail needs a width or a height");
  if (!["contain", "cover", "fill"].includes(p.fit)) throw new Error("thumbnail parameter fit must be contain, cover or fill");
  if (!["jpeg", "png", "webp"].includes(p.format)) throw new Error("thumbnail parameter format must be jpeg, png or webp");
  if (!Number.isInteger(p.quality) || p.quality < 1 || p.quality > 100) throw new Error("thumbnail parameter quality must be an integer 1-100");
  return p;
}

/** The handler: `async (input, ctx) => result`, its thumbnail added with ctx.output. */
export async function thumbnail(input, ctx) {
  const p = params(input);
  const file = ctx.files[0];
  if (!file) throw new Error("thumbnail needs an image in file 0");
  ctx.progress({ percent: 10, stage: "decoding" });
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    throw new Error(`file 0 is not an image this browser can decode (${file.size} bytes): ${e?.message ?? e}`);
  }
  const { w, h, crop } = targetSize(bitmap.width, bitmap.height, p);
  const canvas = new OffscreenCanvas(w, h);
  const g = canvas.getContext("2d");
  if (!g) throw new Error("no 2D canvas in this browser");
  if (p.format === "jpeg") {
    g.fillStyle = "#fff"; // JPEG has no alpha: flatten onto white
    g.fillRect(0, 0, w, h);
  }
  if (crop) {
    const scale = Math.max(w / bitmap.width, h / bitmap.height);
    const sw = w / scale;
    const sh = h / scale;
    g.drawImage(bitmap, (bitmap.width - sw) / 2, (bitmap.height - sh) / 2, sw, sh, 0, 0, w, h);
  } else g.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  ctx.progress({ percent: 70, stage: "encoding" });
  const blob = await canvas.convertToBlob({ type: `image/${p.format}`, quality: p.quality / 100 });
  if (blob.type !== `image/${p.format}`) throw new Error(`this browser cannot encode ${p.format}`);
  ctx.output(new File([blob], `thumbnail.${p.format}`, { type: blob.type }));
  return { width: w, height: h, format: p.format, bytes: blob.size };
}
