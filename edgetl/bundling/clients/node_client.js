#!/usr/bin/env node
// Reference client of an edgetl bundle: the ONNX model in onnxruntime-node, with a pure-JavaScript
// PNG/JPEG decode (pngjs, jpeg-js) and the preprocessing training used (../model.json).
//
//   cd node && npm install            # .npmrc skips onnxruntime-node's optional CUDA download
//   node client.js photo.png [more.jpg ...] [--top-k 3] [--threads 4]
//   node client.js --selftest         # every test vector vs ../test_vectors/expected.json; exit 1 on a mismatch
//
// Standalone: nothing here needs edgetl. Exit status: 0 ok, 1 self-test mismatch, 2 bad usage or unreadable file.
'use strict';

const fs = require('fs');
const path = require('path');

const BUNDLE = path.resolve(__dirname, '..');
const f32 = Math.fround;

class ClientError extends Error {}

function need(name) {
  try {
    return require(name);
  } catch (error) {
    if (error.code !== 'MODULE_NOT_FOUND') throw error;
    throw new ClientError(`the npm package ${name} is not installed: run \`npm install\` in ${__dirname}`);
  }
}

// ---------------------------------------------------------------- decoding: 8-bit RGB, as training saw it

function decodeImage(file) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    throw new ClientError(`${file}: cannot read (${error.code || error.message})`);
  }
  try {
    if (bytes.length > 8 && bytes.readUInt32BE(0) === 0x89504e47) {
      // RGBA, 8 bits (pngjs expands palette and grayscale); alpha is dropped below, not blended, as in training.
      const png = need('pngjs').PNG.sync.read(bytes);
      return { width: png.width, height: png.height, channels: 4, data: png.data };
    }
    if (bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
      const jpeg = need('jpeg-js').decode(bytes, { useTArray: true, formatAsRGBA: false });
      return applyOrientation({ width: jpeg.width, height: jpeg.height, channels: 3, data: jpeg.data },
        exifOrientation(bytes));
    }
  } catch (error) {
    if (error instanceof ClientError) throw error;
    throw new ClientError(`${file}: cannot decode the image (${error.message})`);
  }
  throw new ClientError(`${file}: not a PNG or JPEG file (this client decodes those two)`);
}

function exifOrientation(bytes) {
  // The EXIF Orientation tag (0x0112) of a JPEG's APP1 segment; 1 when absent or unreadable.
  let offset = 2;
  while (offset + 4 <= bytes.length && bytes[offset] === 0xff) {
    const marker = bytes[offset + 1];
    const length = bytes.readUInt16BE(offset + 2);
    if (marker === 0xda) break; // start of scan: no more metadata
    const start = offset + 4;
    if (marker === 0xe1 && bytes.toString('latin1', start, start + 6) === 'Exif\0\0') {
      const tiff = start + 6;
      const little = bytes.toString('latin1', tiff, tiff + 2) === 'II';
      const u16 = (at) => (little ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at));
      const u32 = (at) => (little ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at));
      try {
        const ifd = tiff + u32(tiff + 4);
        for (let i = 0, n = u16(ifd); i < n; i++) {
          const entry = ifd + 2 + 12 * i;
          if (u16(entry) === 0x0112) {
            const value = u16(entry + 8);
            return value >= 1 && value <= 8 ? value : 1;
          }
        }
      } catch (error) {
        return 1; // a truncated EXIF block: pixels as stored
      }
      return 1;
    }
    offset = start + length - 2;
  }
  return 1;
}

function applyOrientation(image, orientation) {
  // Turn stored pixels upright (the transforms of PIL's ImageOps.exif_transpose, which training applies).
  if (orientation === 1) return image;
  const { width: w, height: h, channels: c, data } = image;
  const swap = orientation >= 5;
  const outW = swap ? h : w;
  const outH = swap ? w : h;
  const out = new Uint8Array(outW * outH * c);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      let sx;
      let sy;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sx = x; sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        default: sx = w - 1 - y; sy = x; break; // 8
      }
      for (let k = 0; k < c; k++) out[(y * outW + x) * c + k] = data[(sy * w + sx) * c + k];
    }
  }
  return { width: outW, height: outH, channels: c, data: out };
}

// ---------------------------------------------------------------- preprocessing, as in training

function bilinearAxis(inSize, outSize) {
  // TensorFlow's half-pixel scaler in float32: source = (i + 0.5) * in / out - 0.5.
  const scale = f32(inSize / outSize);
  const low = new Int32Array(outSize);
  const high = new Int32Array(outSize);
  const lerp = new Float32Array(outSize);
  for (let i = 0; i < outSize; i++) {
    const source = f32(f32(f32(i + 0.5) * scale) - 0.5);
    const floor = Math.floor(source);
    low[i] = Math.max(floor, 0);
    high[i] = Math.min(Math.ceil(source), inSize - 1);
    lerp[i] = f32(source - floor);
  }
  return { low, high, lerp };
}

function preprocess(file, spec) {
  // tf.image.resize(bilinear: half-pixel centers, no antialiasing, no crop), then (pixel - mean) / std.
  const image = decodeImage(file);
  const pre = spec.preprocessing;
  const height = pre.resize.height;
  const width = pre.resize.width;
  const mean = pre.normalization.mean;
  const std = pre.normalization.std;
  const ys = bilinearAxis(image.height, height);
  const xs = bilinearAxis(image.width, width);
  const nchw = spec.input.layout === 'NCHW';
  const out = new Float32Array(height * width * 3);
  const px = (y, x, k) => image.data[(y * image.width + x) * image.channels + k];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let k = 0; k < 3; k++) {
        const xl = xs.lerp[x];
        const tl = px(ys.low[y], xs.low[x], k);
        const tr = px(ys.low[y], xs.high[x], k);
        const bl = px(ys.high[y], xs.low[x], k);
        const br = px(ys.high[y], xs.high[x], k);
        const top = f32(tl + f32(f32(tr - tl) * xl));
        const bottom = f32(bl + f32(f32(br - bl) * xl));
        const value = f32(top + f32(f32(bottom - top) * ys.lerp[y]));
        const normalized = f32(f32(value - f32(mean[k])) / f32(std[k]));
        out[nchw ? (k * height + y) * width + x : (y * width + x) * 3 + k] = normalized;
      }
    }
  }
  return out;
}

function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function toInput(values, tensor) {
  const q = tensor.quantization;
  if (!q) return values;
  const [lo, hi, Type] = tensor.dtype === 'uint8' ? [0, 255, Uint8Array] : [-128, 127, Int8Array];
  return Type.from(values, (v) => Math.min(hi, Math.max(lo, roundHalfEven(f32(f32(v / f32(q.scale)) + q.zero_point)))));
}

function fromOutput(values, tensor) {
  const q = tensor.quantization;
  return Float32Array.from(values, (v) => (q ? f32(f32(v - q.zero_point) * f32(q.scale)) : v));
}

// ---------------------------------------------------------------- running, top-k and the self-test

async function openModel(spec, threads) {
  const ort = need('onnxruntime-node');
  const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
  if (threads) options.intraOpNumThreads = threads;
  const session = await ort.InferenceSession.create(path.join(BUNDLE, spec.model_file), options);
  const dims = spec.input.shape;
  return {
    name: `onnxruntime-node ${need('onnxruntime-node/package.json').version}`,
    async classify(file) {
      const input = preprocess(file, spec);
      const tensor = new ort.Tensor(spec.input.dtype, toInput(input, spec.input), dims);
      const result = await session.run({ [session.inputNames[0]]: tensor });
      const mean = input.reduce((sum, v) => sum + v, 0) / input.length;
      return { probabilities: fromOutput(result[session.outputNames[0]].data, spec.output), inputMean: mean };
    },
  };
}

// Numbers printed as the Python clients print them (%.3g, %.2e, %g), so outputs can be compared line by line.
// The embedding model of a prototype or siamese run's bundle (model.json's `embedding`): unit-length vectors.
async function openEmbedder(spec, threads) {
  const ort = need('onnxruntime-node');
  const section = spec.embedding;
  const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
  if (threads) options.intraOpNumThreads = threads;
  const session = await ort.InferenceSession.create(path.join(BUNDLE, section.model_file), options);
  return {
    async embed(file) {
      const tensor = new ort.Tensor(section.input.dtype, toInput(preprocess(file, spec), section.input), spec.input.shape);
      const result = await session.run({ [session.inputNames[0]]: tensor });
      const vector = fromOutput(result[session.outputNames[0]].data, section.output);
      const length = Math.max(Math.sqrt(vector.reduce((sum, v) => sum + v * v, 0)), 1e-12);
      return vector.map((v) => v / length);
    },
  };
}

// How alike two unit-length embeddings are (higher: more alike), by the run's scorer (model.json).
function score(first, second, scorer) {
  if (scorer.kind === 'cosine') return first.reduce((sum, v, i) => sum + v * second[i], 0);
  const logit = first.reduce((sum, v, i) => sum + Math.abs(v - second[i]) * scorer.weights[i], 0) + scorer.bias;
  return 1 / (1 + Math.exp(-logit));
}

// Are two image files the same thing, at the threshold edgetl calibrated? { score, same }
async function verify(embedder, spec, first, second) {
  const similarity = spec.embedding.similarity;
  const value = score(await embedder.embed(first), await embedder.embed(second), similarity.scorer);
  return { score: value, same: value >= similarity.verify.threshold };
}

async function selftestPairs(embedder, spec, expected) {
  const check = expected.verify;
  const vectors = {};
  let failed = 0;
  let worst = 0;
  for (const pair of check.pairs) {
    for (const name of [pair.first, pair.second]) {
      if (!vectors[name]) vectors[name] = await embedder.embed(path.join(BUNDLE, 'test_vectors', name));
    }
    const value = score(vectors[pair.first], vectors[pair.second], spec.embedding.similarity.scorer);
    const diff = Math.abs(value - pair.score);
    worst = Math.max(worst, diff);
    const flipped = (value >= check.threshold) !== pair.same && Math.abs(pair.score - check.threshold) > check.tolerance;
    if (diff > check.tolerance || flipped) {
      failed += 1;
      console.log(`  FAIL  verify ${pair.first} ${pair.second}: score ${value.toFixed(6)}, expected ` +
        `${pair.score.toFixed(6)} (${pair.same ? 'same' : 'different'})`);
    }
  }
  if (!failed) console.log(`  ok    verify: ${check.pairs.length} pairs, same decisions, max |score diff| ${e2(worst)}`);
  return failed;
}

const e2 = (x) => x.toExponential(2).replace(/e([+-])(\d)$/, 'e$10$2');
function g3(x) {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const exponent = Math.floor(Math.log10(Math.abs(Number(x.toPrecision(3)))));
  if (exponent < -4 || exponent >= 3) return e2(x).replace(/\.?0+e/, 'e');
  return String(Number(x.toPrecision(3)));
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function compare(got, want, tolerance, labels) {
  if (got.length !== want.length) return { problems: [`${got.length} outputs, expected ${want.length}`], maxDiff: NaN };
  const problems = [];
  const top = argmax(got);
  const wantTop = argmax(want);
  // A different top-1 is a mismatch, unless the expected probabilities of both classes are a near tie.
  if (top !== wantTop && want[wantTop] - want[top] > tolerance) {
    problems.push(`top-1 ${labels[top]}, expected ${labels[wantTop]}`);
  }
  const diffs = Array.from(got, (v, i) => Math.abs(v - want[i]));
  const worst = argmax(diffs);
  if (diffs[worst] > tolerance) {
    problems.push(`max |diff| ${g3(diffs[worst])} > ${tolerance} at ${labels[worst]} ` +
      `(got ${got[worst].toFixed(6)}, expected ${want[worst].toFixed(6)})`);
  }
  return { problems, maxDiff: Math.max(...diffs) };
}

async function selftest(model, spec, labels, embedder) {
  const folder = path.join(BUNDLE, 'test_vectors');
  const expected = JSON.parse(fs.readFileSync(path.join(folder, 'expected.json'), 'utf8'));
  const tolerance = expected.tolerance.max_abs_diff;
  console.log(`selftest: ${spec.model_file} in ${model.name}, ${expected.vectors.length} test vectors, ` +
    `tolerance: top-1 equal and max |diff| <= ${tolerance}`);
  let failed = 0;
  for (const vector of expected.vectors) {
    const { probabilities, inputMean } = await model.classify(path.join(folder, vector.file));
    const { problems, maxDiff } = compare(probabilities, vector.probabilities, tolerance, labels);
    if (problems.length) {
      failed += 1;
      const hint = Math.abs(inputMean - vector.input_mean) > 1e-4
        ? `; input tensor mean ${inputMean.toFixed(6)}, expected ${vector.input_mean.toFixed(6)}: preprocessing differs` : '';
      console.log(`  FAIL  ${vector.file}: ${problems.join('; ')}${hint}`);
    } else {
      console.log(`  ok    ${vector.file}: top-1 ${labels[argmax(probabilities)]}, max |diff| ${e2(maxDiff)}`);
    }
  }
  const pairsFailed = embedder && expected.verify ? await selftestPairs(embedder, spec, expected) : 0;
  if (pairsFailed) {
    console.log(`selftest FAILED: ${pairsFailed} of ${expected.verify.pairs.length} verify pairs differ from expected.json`);
    return 1;
  }
  if (failed) {
    console.log(`selftest FAILED: ${failed} of ${expected.vectors.length} test vectors differ from expected.json`);
    return 1;
  }
  console.log(`selftest passed: ${expected.vectors.length} of ${expected.vectors.length} test vectors match`);
  return 0;
}

function parseArgs(argv) {
  const args = { images: [], topK: 3, threads: 0, selftest: false, verify: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--selftest') args.selftest = true;
    else if (arg === '--verify') {
      args.verify = [argv[++i], argv[++i]];
      if (args.verify.some((file) => !file || file.startsWith('-'))) throw new ClientError('--verify: give two image files');
    }
    else if (arg === '--top-k' || arg === '--threads') {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < (arg === '--top-k' ? 1 : 0)) throw new ClientError(`${arg}: expected a whole number`);
      args[arg === '--top-k' ? 'topK' : 'threads'] = value;
    } else if (arg === '-h' || arg === '--help') args.help = true;
    else if (arg.startsWith('-')) throw new ClientError(`unknown option ${arg} (see --help)`);
    else args.images.push(arg);
  }
  if (!args.help && !args.selftest && !args.verify && !args.images.length) {
    throw new ClientError('give image files to classify, --verify A B, or --selftest');
  }
  return args;
}

async function main(argv) {
  const args = parseArgs(argv);
  if (args.help) {
    console.log('usage: node client.js [--top-k K] [--threads N] IMAGE... | node client.js --verify A B | ' +
      'node client.js --selftest');
    return 0;
  }
  const spec = JSON.parse(fs.readFileSync(path.join(BUNDLE, 'model.json'), 'utf8'));
  const labels = fs.readFileSync(path.join(BUNDLE, spec.output.labels_file), 'utf8').split(/\r?\n/);
  if (labels[labels.length - 1] === '') labels.pop();
  // Default: the thread count edgetl measured fastest for this file (model.json), else the runtime's.
  const threads = args.threads || (spec.runtime_settings || {}).threads || 0;
  const model = await openModel(spec, threads);
  const embedder = spec.embedding ? await openEmbedder(spec, threads) : null;
  if (args.selftest) return selftest(model, spec, labels, embedder);
  if (args.verify) {
    if (!embedder || !(spec.embedding.similarity || {}).verify) {
      throw new ClientError('this bundle has no calibrated embedding model; --verify needs the bundle of a prototype ' +
        'or siamese run (edgetl train --head prototype|siamese)');
    }
    const { score: value, same } = await verify(embedder, spec, ...args.verify);
    const threshold = spec.embedding.similarity.verify.threshold;
    console.log(`${same ? 'same' : 'different'}: score ${value.toFixed(4)} ${same ? '>=' : '<'} threshold ${threshold.toFixed(4)}`);
    return 0;
  }
  const unknown = embedder && (spec.embedding.similarity || {}).unknown;
  const table = unknown ? JSON.parse(fs.readFileSync(path.join(BUNDLE, spec.embedding.table_file), 'utf8')) : null;
  for (const file of args.images) {
    const { probabilities } = await model.classify(file);
    console.log(file);
    if (unknown) { // a class it does not know: the best cosine to the prototypes is below the calibrated threshold
      const vector = await embedder.embed(file);
      const cosines = table.vectors.map((row) => row.reduce((sum, v, i) => sum + v * vector[i], 0));
      const best = argmax(cosines);
      if (cosines[best] < unknown.threshold) {
        console.log(`  unknown: best cosine ${cosines[best].toFixed(4)} (to ${table.labels[best]}) < threshold ` +
          `${unknown.threshold.toFixed(4)}`);
      }
    }
    const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    for (const index of order.slice(0, args.topK)) console.log(`  ${labels[index]}  ${probabilities[index].toFixed(4)}`);
  }
  return 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (error) => {
  console.error(`error: ${error instanceof ClientError ? error.message : error.stack || error}`);
  process.exitCode = 2;
});
