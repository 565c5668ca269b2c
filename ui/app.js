// The dashboard's entry (SPEC section 11): sign-in, the frame, and the router
// from the URL's #fragment to a view. The credential never enters the URL.

import {ApiError, clearSession, currentSession, get, saveSession} from './api.js';
import {clear, el} from './dom.js';
import {errorText} from './panels.js';
import {customerView, keyView, orgView, orgsView, projectView, selfView} from './views.js';

const app = document.getElementById('app');

function signInView() {
    const error = el('p', {class: 'form-error', id: 'sign-in-error', role: 'alert'});
    const credential = el('input', {id: 'credential', name: 'credential', type: 'password', required: true,
                                    autocomplete: 'off', spellcheck: 'false'});
    const kind = (value, label, checked) => el('label', {class: 'choice'},
        el('input', {type: 'radio', name: 'kind', value, id: 'kind-' + value, checked}), ' ' + label);
    const form = el('form', {id: 'sign-in', class: 'card sign-in', 'aria-label': 'Sign in'},
                    el('h1', {}, 'Sign in'),
                    el('fieldset', {}, el('legend', {}, 'As'),
                       kind('admin', 'operator (the admin token)', true), kind('key', 'key holder (your API key)', false)),
                    el('div', {class: 'field'}, el('label', {for: 'credential'}, 'Token or API key'), credential),
                    el('p', {class: 'muted'}, 'Kept in this tab only (sessionStorage) and sent as a bearer header.'),
                    el('div', {class: 'actions'}, el('button', {type: 'submit', id: 'sign-in-submit'}, 'Sign in')),
                    error);
    form.addEventListener('submit', async (event) => {
        event.preventDefault();
        error.textContent = '';
        const session = {kind: form.querySelector('input[name="kind"]:checked').value, credential: credential.value.trim()};
        try {
            // the call that this credential's view starts with tells whether it works
            await get(session.kind === 'admin' ? 'orgs' : 'keys/self', {session});
        } catch (e) {
            error.textContent = e instanceof ApiError && e.status === 401
                ? 'Not accepted: ' + e.message
                : errorText(e);
            return;
        }
        saveSession(session.kind, session.credential);
        credential.value = '';
        render();  // the page the URL names (a link opened before signing in)
    });
    return el('div', {class: 'page narrow'}, form);
}

function header(session) {
    const who = el('span', {id: 'whoami'}, session.kind === 'admin' ? 'Operator' : 'Key holder');
    const signOut = el('button', {type: 'button', id: 'sign-out', class: 'secondary small'}, 'Sign out');
    signOut.addEventListener('click', () => {
        clearSession();
        location.hash = '#/';
        render();
    });
    return el('header', {class: 'top'}, el('a', {href: '#/', class: 'brand'}, 'spend-cap'),
              el('div', {class: 'who'}, who, signOut));
}

// #/  #/orgs/O  #/projects/P  #/keys/K  #/orgs/O/customers/C
function route(hash, session) {
    if (session.kind === 'key') return selfView();
    const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
    if (parts[0] === 'orgs' && parts.length === 2) return orgView(parts[1]);
    if (parts[0] === 'orgs' && parts[2] === 'customers' && parts.length === 4) return customerView(parts[1], parts[3]);
    if (parts[0] === 'projects' && parts.length === 2) return projectView(parts[1]);
    if (parts[0] === 'keys' && parts.length === 2) return keyView(parts[1]);
    return orgsView();
}

function render() {
    const session = currentSession();
    clear(app);
    if (!session) {
        app.append(signInView());
        document.getElementById('credential').focus();
        return;
    }
    let view;
    try {
        view = route(location.hash, session);
    } catch (e) {
        view = el('p', {class: 'form-error', role: 'alert'}, errorText(e));
    }
    app.append(header(session), el('main', {id: 'view'}, view));
    const title = document.getElementById('page-title');
    document.title = (title ? title.textContent + ' · ' : '') + 'spend-cap';
}

window.addEventListener('hashchange', render);
render();
