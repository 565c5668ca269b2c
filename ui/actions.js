// What an operator can do from the page: create a key (its secret shown once),
// revoke, rotate with grace, set and clear limits, top up (one idempotency key
// per top-up the person means), set cleared spend. Every form shows the API's
// error message as it came; `changed` refreshes the figures after a success.

import {del, post, put, randomToken} from './api.js';
import {el, money, usd} from './dom.js';
import {errorText} from './panels.js';

function field(id, label, attributes = {}, hint) {
    return el('div', {class: 'field'}, el('label', {for: id}, label),
              el('input', Object.assign({id, name: id, autocomplete: 'off'}, attributes)),
              hint ? el('small', {class: 'muted', id: id + '-hint'}, hint) : null);
}

// Runs `action` for a submitted form: buttons disabled while it runs (a second
// click cannot start a second call), the answer or the error shown in `result`.
function onSubmit(form, result, action) {
    form.addEventListener('submit', async (event) => {
        event.preventDefault();
        if (form.dataset.busy === 'true') return;
        form.dataset.busy = 'true';
        const buttons = form.querySelectorAll('button');
        buttons.forEach((b) => { b.disabled = true; });
        result.className = 'form-result';
        result.textContent = 'Working…';
        try {
            const shown = await action();
            result.replaceChildren(...[].concat(shown || 'Done.'));
            result.classList.add('ok');
        } catch (e) {
            result.textContent = errorText(e);
            result.classList.add('form-error');
        } finally {
            form.dataset.busy = 'false';
            buttons.forEach((b) => { b.disabled = false; });
        }
    });
}

function resultArea(id) {
    return el('div', {class: 'form-result', id, role: 'status', 'aria-live': 'polite'});
}

// The secret of a created or rotated key: shown this once, with a copy button.
function secretOnce(secret, keyId) {
    const code = el('code', {id: 'new-secret', class: 'secret'}, secret);
    const copy = el('button', {type: 'button', id: 'copy-secret', class: 'secondary'}, 'Copy');
    copy.addEventListener('click', async () => {
        try {
            await navigator.clipboard.writeText(secret);
        } catch (e) {
            // no clipboard API (plain http): select the text for Ctrl-C
            const range = document.createRange();
            range.selectNodeContents(code);
            const selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
            document.execCommand && document.execCommand('copy');
        }
        copy.textContent = 'Copied';
    });
    return el('div', {class: 'secret-once', id: 'secret-once', dataset: {key: keyId}},
              el('p', {}, 'The secret of ', el('strong', {}, keyId), '. It is shown this once: store it now.'),
              el('div', {class: 'secret-line'}, code, copy));
}

export function createKeyForm(project, changed) {
    const result = resultArea('create-key-result');
    const form = el('form', {id: 'create-key', class: 'card', 'aria-label': 'Create a key'},
                    el('h2', {}, 'Create a key'),
                    field('new-key-id', 'Id (optional: one is generated)', {pattern: '[A-Za-z0-9_.@+\\-]{1,128}'}),
                    field('new-key-name', 'Name (optional)'),
                    field('new-key-expires', 'Expires at (optional, e.g. 2027-01-01T00:00:00Z)'),
                    el('div', {class: 'actions'}, el('button', {type: 'submit'}, 'Create key')), result);
    onSubmit(form, result, async () => {
        const body = {project};
        for (const [id, name] of [['new-key-id', 'id'], ['new-key-name', 'name'], ['new-key-expires', 'expires_at']]) {
            const value = form.querySelector('#' + id).value.trim();
            if (value) body[name] = value;
        }
        const key = await post('keys', body);
        form.querySelector('#new-key-id').value = '';
        form.querySelector('#new-key-name').value = '';
        changed();
        return [secretOnce(key.secret, key.id),
                el('p', {}, el('a', {href: '#/keys/' + encodeURIComponent(key.id)}, 'Open key ' + key.id))];
    });
    return form;
}

export function revokeForm(keyId, changed) {
    const result = resultArea('revoke-result');
    const button = el('button', {type: 'submit', id: 'revoke-key', class: 'danger'}, 'Revoke key');
    const form = el('form', {id: 'revoke-form', class: 'card', 'aria-label': 'Revoke'},
                    el('h2', {}, 'Revoke'),
                    el('p', {class: 'muted'}, 'The next request with this key gets 401 on every node. Click twice to confirm.'),
                    el('div', {class: 'actions'}, button), result);
    let armedUntil = 0;
    form.addEventListener('submit', (event) => {
        if (Date.now() > armedUntil) {
            // the first click only arms the button: a revoke cannot be undone
            event.preventDefault();
            event.stopImmediatePropagation();
            armedUntil = Date.now() + 10000;
            button.textContent = 'Click again to revoke';
        }
    });
    onSubmit(form, result, async () => {
        await del('keys/' + encodeURIComponent(keyId));
        armedUntil = 0;
        button.textContent = 'Revoked';
        changed();
        return 'Revoked.';
    });
    return form;
}

export function rotateForm(keyId, changed) {
    const result = resultArea('rotate-result');
    const form = el('form', {id: 'rotate-key', class: 'card', 'aria-label': 'Rotate the secret'},
                    el('h2', {}, 'Rotate the secret'),
                    field('grace-seconds', 'Grace (seconds the old secret still works)',
                          {type: 'number', min: '0', step: '1', value: '0', inputmode: 'numeric'}),
                    el('div', {class: 'actions'}, el('button', {type: 'submit'}, 'Rotate')), result);
    onSubmit(form, result, async () => {
        const grace = form.querySelector('#grace-seconds').value.trim();
        const body = grace === '' ? {} : {grace_seconds: Number(grace)};
        const key = await post('keys/' + encodeURIComponent(keyId) + '/rotate', body);
        changed();
        return secretOnce(key.secret, key.id);
    });
    return form;
}

const AMOUNT_LIMITS = [['daily_usd', 'Daily USD'], ['weekly_usd', 'Weekly USD'], ['monthly_usd', 'Monthly USD'],
                       ['lifetime_usd', 'Lifetime USD']];
const COUNT_LIMITS = [['daily_requests', 'Daily requests'], ['weekly_requests', 'Weekly requests'],
                      ['monthly_requests', 'Monthly requests'], ['daily_tokens', 'Daily tokens'],
                      ['weekly_tokens', 'Weekly tokens'], ['monthly_tokens', 'Monthly tokens'],
                      ['rpm', 'Requests per minute'], ['tpm', 'Tokens per minute']];

// The limits of one scope (LIMITS of the policy file): PUT replaces them
// entirely, "Clear" drops the API's override (the file's limits apply again).
export function limitsForm(path, limits, changed) {
    limits = limits || {};
    const result = resultArea('limits-result');
    const amountFields = AMOUNT_LIMITS.map(([name, label]) =>
        field('limit-' + name, label, {inputmode: 'decimal', value: limits[name] ?? '', placeholder: 'no cap'}));
    const countFields = COUNT_LIMITS.map(([name, label]) =>
        field('limit-' + name, label, {type: 'number', min: '0', step: '1', value: limits[name] ?? '', placeholder: 'no cap'}));
    const models = el('textarea', {id: 'limit-models', name: 'limit-models', rows: '3', spellcheck: 'false',
                                   placeholder: '{"gpt-4o*": {"daily_usd": "5"}}'},
                      limits.models ? JSON.stringify(limits.models) : '');
    const allowed = el('input', {id: 'limit-allowed_models', name: 'limit-allowed_models', autocomplete: 'off',
                                 placeholder: 'any model', value: (limits.allowed_models || []).join(', ')});
    const clearButton = el('button', {type: 'button', id: 'clear-limits', class: 'secondary'}, 'Clear limits');
    const form = el('form', {id: 'limits-form', class: 'card wide', 'aria-label': 'Limits'},
                    el('h2', {}, 'Limits'),
                    el('fieldset', {}, el('legend', {}, 'Spend (USD)'), el('div', {class: 'grid'}, amountFields)),
                    el('fieldset', {}, el('legend', {}, 'Requests and tokens'), el('div', {class: 'grid'}, countFields)),
                    el('fieldset', {}, el('legend', {}, 'Models'),
                       el('div', {class: 'field'}, el('label', {for: 'limit-models'}, 'Per-model limits (JSON: pattern → limits)'), models),
                       el('div', {class: 'field'}, el('label', {for: 'limit-allowed_models'}, 'Allowed models (patterns, comma-separated)'), allowed)),
                    el('div', {class: 'actions'}, el('button', {type: 'submit', id: 'save-limits'}, 'Save limits'), clearButton),
                    result);
    onSubmit(form, result, async () => {
        const body = {};
        for (const [name] of AMOUNT_LIMITS) {
            const value = form.querySelector('#limit-' + name).value.trim();
            if (value !== '') body[name] = value;  // a string: the API parses decimals exactly
        }
        for (const [name] of COUNT_LIMITS) {
            const value = form.querySelector('#limit-' + name).value.trim();
            if (value !== '') body[name] = /^\d+$/.test(value) ? Number(value) : value;
        }
        const modelsText = models.value.trim();
        if (modelsText) {
            try {
                body.models = JSON.parse(modelsText);
            } catch (e) {
                throw new Error('per-model limits: not JSON (' + e.message + ')');
            }
        }
        const patterns = allowed.value.split(/[\s,]+/).filter(Boolean);
        if (patterns.length) body.allowed_models = patterns;
        await put(path, body);
        changed();
        return 'Limits saved.';
    });
    clearButton.addEventListener('click', async () => {
        clearButton.disabled = true;
        result.className = 'form-result';
        try {
            await del(path);
            result.textContent = 'Limits cleared: the policy file\u2019s apply.';
            result.classList.add('ok');
            changed();
        } catch (e) {
            result.textContent = errorText(e);
            result.classList.add('form-error');
        } finally {
            clearButton.disabled = false;
        }
    });
    return form;
}

// A top-up: the idempotency key is made when the form is shown and again only
// when an amount is typed, so a double click (or a retry after a lost answer)
// credits once; after a credit the amount is emptied, so a late second click
// sends nothing.
export function topupForm(org, changed) {
    const result = resultArea('topup-result');
    const amount = el('input', {id: 'topup-amount', name: 'topup-amount', inputmode: 'decimal', required: true,
                                autocomplete: 'off', placeholder: '100.00'});
    const form = el('form', {id: 'topup-form', class: 'card', 'aria-label': 'Top up'},
                    el('h2', {}, 'Top up the prepaid balance'),
                    el('div', {class: 'field'}, el('label', {for: 'topup-amount'}, 'Amount (USD)'), amount),
                    el('div', {class: 'actions'}, el('button', {type: 'submit', id: 'topup-submit'}, 'Top up')), result);
    const newIntent = () => { form.dataset.idempotencyKey = 'dashboard-' + randomToken(); };
    newIntent();
    amount.addEventListener('input', newIntent);
    onSubmit(form, result, async () => {
        const answer = await post('orgs/' + encodeURIComponent(org) + '/topups',
                                  {amount_usd: amount.value.trim(), idempotency_key: form.dataset.idempotencyKey});
        if (answer.applied) amount.value = '';
        changed();
        return answer.applied
            ? ['Credited ', money(answer.amount_usd, answer.amount_nanousd), '; balance ', usd(answer.balance_usd), '.']
            : ['This top-up was already credited (nothing added); balance ', usd(answer.balance_usd), '.'];
    });
    return form;
}

export function clearedForm(org, changed) {
    const result = resultArea('cleared-result');
    const form = el('form', {id: 'cleared-form', class: 'card', 'aria-label': 'Cleared spend'},
                    el('h2', {}, 'Cleared spend'),
                    el('p', {class: 'muted'}, 'Paid by the org (written by your billing system; plan ceilings read it).'),
                    field('cleared-amount', 'Cleared (USD)', {inputmode: 'decimal', required: true}),
                    el('div', {class: 'actions'}, el('button', {type: 'submit'}, 'Set cleared spend')), result);
    onSubmit(form, result, async () => {
        await put('orgs/' + encodeURIComponent(org) + '/cleared', {cleared_usd: form.querySelector('#cleared-amount').value.trim()});
        changed();
        return 'Cleared spend set.';
    });
    return form;
}
