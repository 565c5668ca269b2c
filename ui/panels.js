// What a page shows about one org, project, key or customer: caps as bars,
// the prepaid balance, requests and tokens, the forecast, a chart of daily
// spend (uPlot, vendored) with its CSV export, and the latest events.

import {ApiError, get} from './api.js';
import {clear, count, el, money, note, relative, section, timeEl, usd} from './dom.js';

const WINDOW_NAMES = {daily: 'Daily', weekly: 'Weekly', monthly: 'Monthly', lifetime: 'Lifetime', balance: 'Prepaid balance'};
const SCOPE_NAMES = {key: 'Key', project: 'Project', org: 'Org', customer: 'Customer', balance: 'Org'};

function windowName(w) {
    return WINDOW_NAMES[w] || w;
}

// The share of `cap` that `spent` is, 0..1 (integers of nano-USD as numbers:
// only a bar's width depends on it).
function share(spent, cap) {
    if (!cap || cap <= 0) return spent > 0 ? 1 : 0;
    return Math.max(0, Math.min(1, spent / cap));
}

function bar(fraction, label) {
    const fill = el('div', {class: 'fill'});
    fill.style.width = (fraction * 100).toFixed(2) + '%';
    const meter = el('div', {class: 'bar', role: 'img', 'aria-label': label}, fill);
    if (fraction >= 1) meter.classList.add('full');
    else if (fraction >= 0.8) meter.classList.add('high');
    return meter;
}

// One cost cap: spent of cap, remaining, reset, forecast; `binding` marks the
// layer with the least remaining (the one a refusal would name).
function capRow({scope, id, window, model, spent, spentNanos, cap, capNanos, remaining, remainingNanos, resetAt,
                 forecastAt, binding}) {
    const title = [SCOPE_NAMES[scope] || scope, id ? '“' + id + '”' : null, windowName(window),
                   model ? 'for ' + model : null].filter(Boolean).join(' · ');
    const fraction = capNanos === null ? 0 : share(spentNanos, capNanos);
    const figures = capNanos === null
        ? [money(spent, spentNanos, 'spent'), ' spent · no cap']
        : [money(spent, spentNanos, 'spent'), ' of ', money(cap, capNanos, 'cap-amount'), ' · ',
           money(remaining, remainingNanos, 'remaining'), ' left'];
    const details = [];
    if (window !== 'balance' && window !== 'lifetime') details.push(el('span', {}, 'resets ', timeEl(resetAt)));
    if (forecastAt) {
        details.push(el('span', {class: 'forecast'}, 'at this pace reached ', timeEl(forecastAt),
                        ' (' + relative(forecastAt) + ')'));
    }
    return el('div', {class: 'cap' + (binding ? ' binding' : ''),
                      dataset: {scope, id, window, model: model || undefined, binding: binding ? 'true' : 'false'}},
              el('div', {class: 'cap-head'}, el('span', {class: 'cap-title'}, title),
                 binding ? el('span', {class: 'badge', title: 'the cap with the least left: the one a request meets first'}, 'binding') : null),
              capNanos === null ? null : bar(fraction, title + ': ' + Math.round(fraction * 100) + '% used'),
              el('div', {class: 'cap-figures'}, figures),
              details.length ? el('div', {class: 'cap-details muted'}, details) : null);
}

// A count cap (requests or tokens) of a usage window, as a thinner bar.
function countRow(label, used, cap) {
    const fraction = cap === null || cap === undefined ? 0 : share(used || 0, cap);
    return el('div', {class: 'count-row', dataset: {count: label}},
              el('span', {class: 'count-label'}, label),
              el('span', {class: 'count-figures'}, count(used ?? 0), cap === null || cap === undefined ? '' : ' of ' + count(cap)),
              cap === null || cap === undefined ? null : bar(fraction, label + ': ' + Math.round(fraction * 100) + '% used'));
}

function usageWindow(scope, id, w, model, bindingWindow) {
    return el('div', {class: 'window', dataset: {window: w.window}},
              capRow({scope, id, window: w.window, model, spent: w.spent_usd, spentNanos: w.spent_nanousd,
                      cap: w.cap_usd, capNanos: w.cap_nanousd, remaining: w.remaining_usd,
                      remainingNanos: w.remaining_nanousd, resetAt: w.reset_at,
                      forecastAt: w.forecast_exhausted_at, binding: bindingWindow === w.window}),
              w.requests === null && w.tokens === null ? null
                  : el('div', {class: 'counts'}, countRow('requests', w.requests, w.requests_cap),
                       countRow('tokens', w.tokens, w.tokens_cap)));
}

// The caps of one scope: USAGE (SPEC section 7) as bars, with the binding
// window (the one with the least remaining among capped windows) marked.
export function usagePanel(usage) {
    const capped = usage.windows.filter((w) => w.cap_nanousd !== null);
    let binding = null;
    for (const w of capped) {
        if (binding === null || w.remaining_nanousd < binding.remaining_nanousd) binding = w;
    }
    const rows = usage.windows.map((w) => usageWindow(usage.scope, null, w, null, binding ? binding.window : null));
    const rates = [];
    for (const [name, label] of [['rpm', 'requests this minute'], ['tpm', 'tokens this minute']]) {
        const r = usage.rates && usage.rates[name];
        if (r) rates.push(countRow(label + ' (' + name + ')', r.used, r.cap));
    }
    const models = (usage.models || []).map((m) =>
        el('div', {class: 'model-usage', dataset: {model: m.model}},
           el('h3', {}, 'Model ', el('code', {}, m.model)),
           m.windows.map((w) => usageWindow(usage.scope, null, w, m.model, null)),
           ['rpm', 'tpm'].filter((n) => m.rates && m.rates[n]).map((n) => countRow(n, m.rates[n].used, m.rates[n].cap))));
    return section('Spend and caps', {id: 'usage'},
                   el('div', {class: 'caps'}, rows),
                   rates.length ? el('div', {class: 'rates'}, el('h3', {}, 'Per-minute rates'), rates) : null,
                   models.length ? el('div', {class: 'models'}, models) : null);
}

// A key's budgets: every cost cap its requests meet, in the order the check
// runs (key, project, org, plan ceiling, prepaid balance), the binding one marked.
export function budgetsPanel(budgets) {
    if (!budgets.length) return section('Budgets in check order', {id: 'budgets'}, note('No cost cap applies to this key.'));
    return section('Budgets in check order', {id: 'budgets'},
                   el('ol', {class: 'layers'}, budgets.map((layer) => el('li', {},
                       capRow({scope: layer.scope, id: layer.id, window: layer.window, model: layer.model,
                               spent: layer.spent_usd, spentNanos: layer.spent_nanousd, cap: layer.cap_usd,
                               capNanos: layer.cap_nanousd, remaining: layer.remaining_usd,
                               remainingNanos: layer.remaining_nanousd, resetAt: layer.reset_at,
                               forecastAt: layer.forecast_exhausted_at, binding: layer.binding})))));
}

export function balancePanel(balance, extra) {
    const low = balance.low_balance_nanousd !== null && balance.available_nanousd < balance.low_balance_nanousd;
    const row = (label, field) => el('div', {class: 'figure', dataset: {field}},
                                     el('dt', {}, label), el('dd', {}, money(balance[field + '_usd'], balance[field + '_nanousd'])));
    return section('Prepaid balance', {id: 'balance'},
                   el('dl', {class: 'figures' + (low ? ' low' : '')},
                      row('Available', 'available'), row('Reserved by requests in flight', 'reserved'),
                      row('Settled balance', 'balance'),
                      el('div', {class: 'figure', dataset: {field: 'low_balance'}}, el('dt', {}, 'Low-balance mark'),
                         el('dd', {}, balance.low_balance_usd === null ? 'none'
                             : money(balance.low_balance_usd, balance.low_balance_nanousd)))),
                   low ? el('p', {class: 'warning'}, 'Below the low-balance mark.') : null,
                   extra);
}

// The last N days of spend as bars (uPlot), with a CSV export of the same days.
export function dailyPanel(path, label) {
    const chart = el('div', {class: 'chart', id: 'daily-chart', 'aria-label': 'Daily spend, last 30 days'});
    const status = el('p', {class: 'muted chart-status'}, 'Loading…');
    const total = el('p', {class: 'chart-total'});
    const exportButton = el('button', {type: 'button', id: 'export-csv', class: 'secondary'}, 'Export CSV');
    const exportError = el('p', {class: 'form-error', role: 'alert'});
    exportButton.addEventListener('click', async () => {
        exportError.textContent = '';
        exportButton.disabled = true;
        try {
            const csv = await get(path + '?days=30&format=csv', {raw: true});
            const link = el('a', {href: URL.createObjectURL(new Blob([csv], {type: 'text/csv'})),
                                  download: 'spend-cap-' + label + '-daily.csv', hidden: true});
            document.body.append(link);
            link.click();
            setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
        } catch (e) {
            exportError.textContent = errorText(e);
        } finally {
            exportButton.disabled = false;
        }
    });
    const panel = section('Daily spend, last 30 days', {id: 'daily'}, status, chart, total,
                          el('div', {class: 'actions'}, exportButton), exportError);
    get(path + '?days=30').then((daily) => drawDaily(chart, status, total, daily),
                                (e) => { status.textContent = errorText(e); status.classList.add('form-error'); });
    return panel;
}

function drawDaily(container, status, total, daily) {
    const days = daily.days;
    const xs = days.map((d) => Date.parse(d.date + 'T00:00:00Z') / 1000);
    const ys = days.map((d) => d.spent_nanousd / 1e9);  // a chart's scale only: figures stay exact
    let sum = 0n;
    for (const d of days) sum += BigInt(d.spent_nanousd);
    total.replaceChildren('Total ', el('span', {class: 'amount', dataset: {nanousd: sum.toString()}}, usd(nanoToDecimal(sum))),
                          ' over ' + days.length + ' days; ' + count(days.reduce((a, d) => a + d.requests, 0)) + ' requests.');
    status.remove();
    if (typeof uPlot !== 'function') {
        container.append(note('The chart library did not load.'));
        return;
    }
    const width = () => Math.max(240, container.clientWidth || 300);
    const options = {
        width: width(),
        height: 200,
        legend: {show: true},
        cursor: {points: {show: false}},
        scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
        axes: [{space: 50},
               {values: (u, values) => values.map((v) => '$' + formatAxis(v)),
                // wide enough for the longest label ("$0.000060")
                size: (u, values) => 14 + 7.5 * Math.max(4, ...(values || []).map((v) => String(v).length))}],
        series: [{value: (u, v) => v === null ? '' : new Date(v * 1000).toISOString().slice(0, 10)},
                 {label: 'spent (USD)', fill: 'rgba(31, 111, 235, 0.35)', stroke: '#1f6feb', width: 1,
                  paths: uPlot.paths.bars({size: [0.7, 40]}), points: {show: false},
                  value: (u, v, s, i) => i === null || i === undefined ? '' : usd(days[i].spent_usd)}],
    };
    const plot = new uPlot(options, [xs, ys], container);
    const observer = new ResizeObserver(() => {
        if (!container.isConnected) {  // the view was replaced: let the chart go
            observer.disconnect();
            plot.destroy();
            return;
        }
        plot.setSize({width: width(), height: 200});
    });
    observer.observe(container);
}

function formatAxis(v) {
    if (v === 0) return '0';
    if (Math.abs(v) >= 1) return v.toLocaleString('en-US', {maximumFractionDigits: 2});
    return v.toPrecision(2);
}

// "12.345" from 12345000000n nano-USD (at least two decimals, as the API writes).
function nanoToDecimal(n) {
    const negative = n < 0n;
    const magnitude = negative ? -n : n;
    const whole = magnitude / 1000000000n;
    const fraction = (magnitude % 1000000000n).toString().padStart(9, '0').replace(/0+$/, '');
    return (negative ? '-' : '') + whole.toString() + '.' + (fraction.length >= 2 ? fraction : fraction.padEnd(2, '0'));
}

// The fields of an event worth a line, in this order; amounts in events are
// nano-USD strings (README, "Events").
const EVENT_FIELDS = ['scope', 'data_id', 'key', 'project', 'customer', 'window', 'period', 'model', 'fraction',
                      'spent', 'cap', 'balance', 'threshold', 'amount_nanousd', 'forecast_exhausted_at',
                      'grace_seconds', 'by'];
const EVENT_AMOUNTS = new Set(['spent', 'cap', 'balance', 'threshold', 'amount_nanousd']);

// The org's latest events, newest first: warnings, blocks, top-ups, key changes.
export function eventsPanel(org, {only} = {}) {
    const list = el('ol', {class: 'events'});
    const status = el('p', {class: 'muted'}, 'Loading…');
    const panel = section('Latest events', {id: 'events'}, status, list);
    get('orgs/' + encodeURIComponent(org) + '/events?latest=50').then((answer) => {
        let events = answer.events.slice().reverse();
        if (only) events = events.filter(only);
        status.textContent = events.length ? '' : 'No events yet.';
        for (const e of events.slice(0, 25)) list.append(eventItem(e));
    }, (e) => { status.textContent = errorText(e); status.classList.add('form-error'); });
    return panel;
}

function eventItem(event) {
    const millis = Number(String(event.id).split('-')[0]);
    const when = Number.isFinite(millis) ? new Date(millis).toISOString() : null;
    const fields = EVENT_FIELDS.filter((f) => event[f] !== undefined && event[f] !== null && event[f] !== '')
        .map((f) => el('span', {class: 'field'}, f.replace(/_nanousd$/, '').replace(/^data_/, '') + ': ',
                       EVENT_AMOUNTS.has(f) && /^-?\d+$/.test(event[f]) ? usd(nanoToDecimal(BigInt(event[f])))
                                                                         : String(event[f])));
    return el('li', {class: 'event', dataset: {type: event.type, id: event.id}},
              el('span', {class: 'event-type'}, event.type), ' ', when ? timeEl(when) : null,
              fields.length ? el('div', {class: 'event-fields'}, fields) : null);
}

export function errorText(e) {
    if (e instanceof ApiError) return (e.status ? e.status + ' ' : '') + e.code + ': ' + e.message;
    return String(e && e.message ? e.message : e);
}

export function placeholder(title, id) {
    const panel = section(title, {id});
    panel.append(note('Loading…'));
    return panel;
}

// Replaces a loading placeholder with what `load` builds (or the API's error).
export function fill(panel, load) {
    load().then((node) => { panel.replaceWith(node); },
                (e) => { clear(panel).append(el('h2', {}, panel.getAttribute('aria-label')),
                                               el('p', {class: 'form-error', role: 'alert'}, errorText(e))); });
    return panel;
}
