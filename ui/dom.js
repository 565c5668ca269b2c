// Building the page's nodes and writing its numbers: elements are made with
// createElement and text nodes only (no innerHTML: ids and messages come from
// users), amounts are the API's exact decimal strings.

// el('div', {class: 'x', dataset: {id: 'a'}, onclick: f}, child, 'text', ...)
export function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
        if (value === undefined || value === null || value === false) continue;
        if (name === 'dataset') {
            for (const [k, v] of Object.entries(value)) {
                if (v !== undefined && v !== null) node.dataset[k] = String(v);
            }
        } else if (name.startsWith('on') && typeof value === 'function') {
            node.addEventListener(name.slice(2), value);
        } else if (name === 'class') {
            node.className = value;
        } else if (value === true) {
            node.setAttribute(name, '');
        } else {
            node.setAttribute(name, String(value));
        }
    }
    append(node, children);
    return node;
}

function append(node, children) {
    for (const child of children) {
        if (child === undefined || child === null || child === false) continue;
        if (Array.isArray(child)) append(node, child);
        else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
}

export function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
}

// "$1,234.5678901" from the API's exact decimal string ("1234.5678901"): every
// decimal the API gives is kept, so two small spends never read the same.
export function usd(decimal) {
    if (decimal === null || decimal === undefined) return '—';
    const text = String(decimal);
    const negative = text.startsWith('-');
    const [whole, fraction] = (negative ? text.slice(1) : text).split('.');
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    return (negative ? '-$' : '$') + grouped + (fraction !== undefined ? '.' + fraction : '');
}

// An amount as an element that carries the integer too (data-nanousd).
export function money(decimal, nanos, className = 'amount') {
    return el('span', {class: className, dataset: {nanousd: nanos}}, usd(decimal));
}

export function count(n) {
    if (n === null || n === undefined) return '—';
    return Number(n).toLocaleString('en-US');
}

// "2026-12-06 00:00 UTC": instants are shown in UTC, as the API gives them.
export function instant(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

// "in 3 h", "in 12 min", "in 2 d" (or "3 h ago").
export function relative(iso, now = Date.now()) {
    if (!iso) return '';
    const ms = new Date(iso).getTime() - now;
    const minutes = Math.round(Math.abs(ms) / 60000);
    let text;
    if (minutes < 60) text = minutes + ' min';
    else if (minutes < 48 * 60) text = Math.round(minutes / 60) + ' h';
    else text = Math.round(minutes / 1440) + ' d';
    return ms >= 0 ? 'in ' + text : text + ' ago';
}

export function timeEl(iso) {
    if (!iso) return el('span', {class: 'muted'}, 'never');
    return el('time', {datetime: iso, title: relative(iso)}, instant(iso));
}

export function section(title, {id, className = 'card'} = {}, ...children) {
    return el('section', {class: className, id, 'aria-label': title}, el('h2', {}, title), ...children);
}

export function note(text) {
    return el('p', {class: 'muted'}, text);
}
