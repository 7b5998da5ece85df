// The review page: talks to the app's JSON API only; no build step, no dependencies.
'use strict';

const $ = (id) => document.getElementById(id);
const PICTURES = ['photo', 'truth', 'prediction', 'overlay'];
const PAGE = 1000;

const state = { model: null, ids: [], request: 0 };

async function getJson(url) {
  const response = await fetch(url);
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    throw new Error(`${url}: HTTP ${response.status}, not JSON`);
  }
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function swatch(color) {
  const box = document.createElement('span');
  box.className = 'swatch';
  box.style.background = `rgb(${color.join(',')})`;
  return box;
}

function percent(value) {
  return value === null || value === undefined ? '–' : `${(100 * value).toFixed(1)} %`;
}

// Provenance values for people: numbers to 4 digits, a nested object one 'key: value' line
// per entry (deeper ones inline), null as a dash.
function factText(value, depth) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'number') {
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  }
  if (Array.isArray(value)) return value.map((v) => factText(v, depth + 1)).join(', ');
  if (typeof value === 'object') {
    const parts = Object.entries(value).map(([k, v]) => `${k}: ${factText(v, depth + 1)}`);
    return parts.join(depth === 0 ? '\n' : ', ');
  }
  return String(value);
}

function showModel(model) {
  state.model = model;
  const [h, w] = model.input_size;
  $('model-line').textContent = `${model.name} · runs on ${model.active_provider} · input ` +
    `${w}×${h} · dataset ${model.dataset.name}`;
  const legend = $('legend');
  legend.replaceChildren();
  for (const category of model.contract.categories) {
    const item = document.createElement('li');
    item.append(swatch(category.color), `${category.id} ${category.name}`);
    legend.append(item);
  }
  const facts = $('provenance');
  facts.replaceChildren();
  const add = (key, value) => {
    const term = document.createElement('dt');
    const detail = document.createElement('dd');
    term.textContent = key;
    detail.textContent = factText(value, 0);
    facts.append(term, detail);
  };
  add('file', model.file);
  for (const [key, value] of Object.entries(model.provenance)) add(key, value);
  add('data licence', model.dataset.licence);
  const select = $('split');
  select.replaceChildren();
  for (const [name, count] of Object.entries(model.dataset.splits)) {
    select.append(new Option(`${name} (${count})`, name));
  }
  select.value = model.dataset.default_split;
}

async function loadIds(split) {
  const ids = [];
  let total = Infinity;
  while (ids.length < total) {
    const page = await getJson(`/api/images?split=${encodeURIComponent(split)}` +
                               `&offset=${ids.length}&limit=${PAGE}`);
    total = page.total;
    ids.push(...page.ids);
    if (page.ids.length === 0) break;
  }
  state.ids = ids;
  $('image-ids').replaceChildren(...ids.map((id) => new Option(id)));
  setStatus(`${ids.length} images in ${split}`);
}

function choose(id) {
  $('image-id').value = id;
  $('image-id').focus();
}

function step(delta) {
  if (!state.ids.length) return;
  const here = state.ids.indexOf($('image-id').value.trim());
  const next = here < 0 ? 0 : (here + delta + state.ids.length) % state.ids.length;
  choose(state.ids[next]);
}

function fillScores(result) {
  const metrics = result.metrics;
  const rows = [];
  for (const category of state.model.contract.categories) {
    if (category.id === state.model.contract.ignore_index) continue;
    const row = document.createElement('tr');
    const name = document.createElement('th');
    name.append(swatch(category.color), category.name);
    const iou = document.createElement('td');
    const value = metrics.iou[category.name];
    iou.textContent = percent(value);
    if (value === null) {
      iou.className = 'none';
      iou.title = 'absent from both the label and the prediction';
    }
    const truth = document.createElement('td');
    truth.textContent = metrics.pixels_per_category.truth[category.name].toLocaleString();
    const predicted = document.createElement('td');
    predicted.textContent = metrics.pixels_per_category.predicted[category.name].toLocaleString();
    row.append(name, iou, truth, predicted);
    rows.push(row);
  }
  $('iou-table').tBodies[0].replaceChildren(...rows);
  $('miou').textContent = percent(metrics.miou);
  $('pixel-accuracy').textContent = percent(metrics.pixel_accuracy);
  $('miou-all').textContent = percent(metrics.miou_all);
  const t = result.inference_ms;
  $('timing').textContent = `Inference ${t.total.toFixed(1)} ms (preprocess ` +
    `${t.preprocess.toFixed(1)}, network ${t.inference.toFixed(1)}, postprocess ` +
    `${t.postprocess.toFixed(1)})${result.cached ? ', from the cache' : ''}; request ` +
    `${result.request_ms.toFixed(1)} ms.`;
}

async function segment() {
  const id = $('image-id').value.trim();
  const split = $('split').value;
  if (!id) {
    setStatus('type an image id, pick one from the list or press Random', true);
    return;
  }
  const ticket = ++state.request;
  setStatus(`segmenting ${id}…`);
  let result;
  try {
    result = await getJson(`/api/segment/${encodeURIComponent(id)}?split=` +
                           encodeURIComponent(split));
  } catch (err) {
    if (ticket === state.request) setStatus(err.message, true);
    return;
  }
  if (ticket !== state.request) return;  // a newer request was made meanwhile
  for (const name of PICTURES) {
    const img = $(`img-${name}`);
    img.onerror = () => setStatus(`the ${name} picture of ${id} could not be loaded`, true);
    img.src = result.images[name];
  }
  fillScores(result);
  const [h, w] = result.height_width;
  setStatus(`${id} (${w}×${h})`);
  history.replaceState(null, '', `#split=${encodeURIComponent(split)}` +
                       `&id=${encodeURIComponent(id)}`);
}

async function start() {
  $('controls').addEventListener('submit', (event) => {
    event.preventDefault();
    segment();
  });
  $('random').addEventListener('click', () => {
    if (state.ids.length) choose(state.ids[Math.floor(Math.random() * state.ids.length)]);
  });
  $('previous').addEventListener('click', () => step(-1));
  $('next').addEventListener('click', () => step(1));
  $('split').addEventListener('change', async () => {
    $('image-id').value = '';
    try {
      await loadIds($('split').value);
    } catch (err) {
      setStatus(err.message, true);
    }
  });
  try {
    showModel(await getJson('/api/model'));
    const wanted = new URLSearchParams(location.hash.slice(1));
    if (wanted.has('split') && wanted.get('split') in state.model.dataset.splits) {
      $('split').value = wanted.get('split');
    }
    await loadIds($('split').value);
    document.body.dataset.ready = 'true';
    if (wanted.has('id')) {
      choose(wanted.get('id'));
      segment();
    }
  } catch (err) {
    setStatus(err.message, true);
  }
}

start();
