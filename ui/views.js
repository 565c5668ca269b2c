// The pages: the operator's (orgs → projects → keys and customers) and the key
// holder's (that one key, read through /keys/self*). A view is the data panels,
// reloaded after every action, and the action forms, which keep their results
// (a secret shown once must not vanish with the refresh it triggers).

import {get, seg} from './api.js';
import {clear, el, money, note, section, timeEl} from './dom.js';
import {budgetsPanel, balancePanel, dailyPanel, errorText, eventsPanel, fill, placeholder, usagePanel} from './panels.js';
import {clearedForm, createKeyForm, limitsForm, revokeForm, rotateForm, topupForm} from './actions.js';

function facts(rows) {
    return el('dl', {class: 'facts'}, rows.filter(Boolean).map(([label, value, field]) =>
        el('div', {class: 'fact', dataset: {field}}, el('dt', {}, label), el('dd', {}, value ?? '—'))));
}

function link(hash, text, attributes = {}) {
    return el('a', Object.assign({href: hash}, attributes), text);
}

function limitsSummary(limits) {
    const entries = Object.entries(limits || {});
    if (!entries.length) return el('span', {class: 'muted'}, 'none');
    return el('code', {class: 'limits'}, JSON.stringify(limits));
}

// A page: a title, the data panels (reloaded by `refresh`) and the forms.
function page(title, crumbs, loadPanels, forms = []) {
    const panels = el('div', {class: 'panels', id: 'panels'});
    const refresh = () => { clear(panels); loadPanels(panels, refresh); };
    refresh();
    return el('div', {class: 'page'},
              el('nav', {class: 'crumbs', 'aria-label': 'Breadcrumbs'}, crumbs.map((c, i) =>
                  [i ? el('span', {class: 'sep', 'aria-hidden': 'true'}, ' › ') : null,
                   c[1] ? link(c[1], c[0]) : el('span', {}, c[0])])),
              el('h1', {id: 'page-title'}, title),
              panels,
              forms.length ? el('div', {class: 'forms', id: 'forms'}, forms.map((f) => f(refresh))) : null);
}

export function orgsView() {
    return page('Orgs', [['Orgs']], (panels) => {
        panels.append(fill(placeholder('Every org', 'orgs'), async () => {
            const {orgs} = await get('orgs');
            if (!orgs.length) return section('Every org', {id: 'orgs'}, note('No orgs yet: add one in the policy file or with PUT /orgs/ID.'));
            return section('Every org', {id: 'orgs', className: 'card wide'},
                           el('ul', {class: 'entity-list'}, orgs.map((o) => el('li', {},
                               link('#/orgs/' + seg(o.id), o.id, {dataset: {org: o.id}}),
                               el('span', {class: 'muted'}, ' ' + [o.plan ? 'plan ' + o.plan : null, o.timezone,
                                   o.prepaid ? 'prepaid' : null, o.source].filter(Boolean).join(' · '))))));
        }));
    });
}

export function orgView(id) {
    const base = 'orgs/' + seg(id);
    return page('Org ' + id, [['Orgs', '#/'], [id]], (panels, refresh) => {
        panels.append(fill(placeholder('Org', 'facts'), async () => {
            const org = await get(base);
            return section('Org', {id: 'facts'}, facts([
                ['Id', org.id, 'id'], ['Plan', org.plan || 'none', 'plan'], ['Time zone', org.timezone, 'timezone'],
                ['Created', timeEl(org.created_at), 'created_at'], ['Prepaid', org.prepaid ? 'yes' : 'no', 'prepaid'],
                ['Cleared spend', money(org.cleared_usd, org.cleared_nanousd), 'cleared'],
                ['Limits', limitsSummary(org.limits), 'limits'], ['Defined in', org.source === 'file' ? 'the policy file' : 'the API', 'source']]));
        }));
        panels.append(fill(placeholder('Spend and caps', 'usage'), async () => usagePanel(await get(base + '/usage'))));
        panels.append(fill(placeholder('Prepaid balance', 'balance'), async () => {
            const [org, balance] = await Promise.all([get(base), get(base + '/balance')]);
            return balancePanel(balance, org.prepaid ? null : note('Not a prepaid org: its requests do not draw on the balance.'));
        }));
        panels.append(dailyPanel(base + '/usage/daily', 'org-' + id));
        panels.append(fill(placeholder('Projects', 'projects'), async () => {
            const {projects} = await get('projects?org=' + seg(id));
            return section('Projects', {id: 'projects'}, projects.length
                ? el('ul', {class: 'entity-list'}, projects.map((p) => el('li', {},
                      link('#/projects/' + seg(p.id), p.id, {dataset: {project: p.id}}),
                      el('span', {class: 'muted'}, ' ' + p.source))))
                : note('No projects.'));
        }));
        panels.append(customerLookup(id));
        panels.append(eventsPanel(id));
    }, [(refresh) => topupForm(id, refresh), (refresh) => clearedForm(id, refresh),
        (refresh) => lazyLimits(base, base + '/limits', refresh)]);
}

// Customers have no list (they are whatever ids callers send): one is opened by id.
function customerLookup(org) {
    const input = el('input', {id: 'customer-id', name: 'customer-id', required: true, autocomplete: 'off',
                               pattern: '[A-Za-z0-9_.@+\\-]{1,128}'});
    const form = el('form', {id: 'customer-form', class: 'inline'},
                    el('label', {for: 'customer-id'}, 'Customer id'), input,
                    el('button', {type: 'submit', class: 'secondary'}, 'Open'));
    form.addEventListener('submit', (event) => {
        event.preventDefault();
        location.hash = '#/orgs/' + seg(org) + '/customers/' + seg(input.value.trim());
    });
    return section('Customers', {id: 'customers'}, note('A customer is counted within the org by the id its requests carry.'), form);
}

// The limits form, filled with the entity's current limits once they are read.
function lazyLimits(recordPath, limitsPath, refresh) {
    const holder = el('div', {class: 'card wide', id: 'limits-holder'}, el('h2', {}, 'Limits'), note('Loading…'));
    get(recordPath).then((record) => holder.replaceWith(limitsForm(limitsPath, record.limits, refresh)),
                         (e) => holder.append(el('p', {class: 'form-error', role: 'alert'}, errorText(e))));
    return holder;
}

export function projectView(id) {
    const base = 'projects/' + seg(id);
    return page('Project ' + id, [['Orgs', '#/'], [id]], (panels) => {
        panels.append(fill(placeholder('Project', 'facts'), async () => {
            const project = await get(base);
            return section('Project', {id: 'facts'}, facts([
                ['Id', project.id, 'id'], ['Org', link('#/orgs/' + seg(project.org), project.org), 'org'],
                ['Limits', limitsSummary(project.limits), 'limits'],
                ['Defined in', project.source === 'file' ? 'the policy file' : 'the API', 'source']]));
        }));
        panels.append(fill(placeholder('Spend and caps', 'usage'), async () => usagePanel(await get(base + '/usage'))));
        panels.append(dailyPanel(base + '/usage/daily', 'project-' + id));
        panels.append(fill(placeholder('Keys', 'keys'), async () => {
            const {keys} = await get('keys?project=' + seg(id));
            return section('Keys', {id: 'keys'}, keys.length
                ? el('ul', {class: 'entity-list'}, keys.map((k) => el('li', {dataset: {revoked: k.revoked ? 'true' : 'false'}},
                      link('#/keys/' + seg(k.id), k.id, {dataset: {key: k.id}}),
                      k.name ? el('span', {}, ' ' + k.name) : null,
                      k.revoked ? el('span', {class: 'badge revoked'}, 'revoked') : null,
                      el('span', {class: 'muted'}, ' ' + k.source))))
                : note('No keys yet.'));
        }));
    }, [(refresh) => createKeyForm(id, refresh), (refresh) => lazyLimits(base, base + '/limits', refresh)]);
}

function keyFacts(key, admin) {
    return section('Key', {id: 'facts'}, facts([
        ['Id', key.id, 'id'], key.name ? ['Name', key.name, 'name'] : null,
        ['Project', admin ? link('#/projects/' + seg(key.project), key.project) : key.project, 'project'],
        ['Org', admin ? link('#/orgs/' + seg(key.org), key.org) : key.org, 'org'],
        ['State', key.revoked ? el('span', {class: 'badge revoked'}, 'revoked') : 'active', 'state'],
        ['Created', timeEl(key.created_at), 'created_at'], ['Expires', timeEl(key.expires_at), 'expires_at'],
        ['Limits', limitsSummary(key.limits), 'limits'],
        ['Defined in', key.source === 'file' ? 'the policy file' : 'the API', 'source']]));
}

export function keyView(id) {
    const base = 'keys/' + seg(id);
    return page('Key ' + id, [['Orgs', '#/'], ['Key ' + id]], (panels) => {
        panels.append(fill(placeholder('Key', 'facts'), async () => {
            const key = await get(base);
            // the org's events about this key (its stream is the org's)
            panels.append(eventsPanel(key.org, {only: (e) => e.key === id || e.data_id === id}));
            return keyFacts(key, true);
        }));
        panels.append(fill(placeholder('Budgets in check order', 'budgets'), async () => budgetsPanel((await get(base + '/budgets')).budgets)));
        panels.append(fill(placeholder('Spend and caps', 'usage'), async () => usagePanel(await get(base + '/usage'))));
        panels.append(dailyPanel(base + '/usage/daily', 'key-' + id));
    }, [(refresh) => revokeForm(id, refresh), (refresh) => rotateForm(id, refresh),
        (refresh) => lazyLimits(base, base + '/limits', refresh)]);
}

export function customerView(org, customer) {
    const base = 'orgs/' + seg(org) + '/customers/' + seg(customer);
    return page('Customer ' + customer, [['Orgs', '#/'], [org, '#/orgs/' + seg(org)], [customer]], (panels) => {
        panels.append(fill(placeholder('Spend and caps', 'usage'), async () => usagePanel(await get(base + '/usage'))));
        panels.append(dailyPanel(base + '/usage/daily', 'customer-' + org + '-' + customer));
    }, [(refresh) => limitsForm(base + '/limits', null, refresh)]);
}

// The key holder's page: that key only, read with its own secret.
export function selfView() {
    return page('Your key', [['Your key']], (panels) => {
        panels.append(fill(placeholder('Key', 'facts'), async () => keyFacts(await get('keys/self'), false)));
        panels.append(fill(placeholder('Budgets in check order', 'budgets'), async () => budgetsPanel((await get('keys/self/budgets')).budgets)));
        panels.append(fill(placeholder('Spend and caps', 'usage'), async () => usagePanel(await get('keys/self/usage'))));
        panels.append(dailyPanel('keys/self/usage/daily', 'my-key'));
    });
}
