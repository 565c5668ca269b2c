// The management API as the page calls it: the credential the person signed in
// with (kept in this tab's sessionStorage only, sent as a bearer header, never in
// a URL or a cookie) and one fetch wrapper that turns every error answer into an
// ApiError carrying the API's own code and message.

const STORAGE_KEY = 'spend-cap.session';

// The API's prefix, written into the page by the module (spend_cap_dashboard).
function apiPrefix() {
    const meta = document.querySelector('meta[name="spend-cap-api"]');
    let prefix = meta ? meta.content : '/';
    if (!prefix.endsWith('/')) prefix += '/';
    return prefix;
}

export const API_PREFIX = apiPrefix();

export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.status = status;
        this.code = code;
    }
}

// {kind: 'admin' | 'key', credential} or null.
export function currentSession() {
    try {
        const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
        if (saved && (saved.kind === 'admin' || saved.kind === 'key') && typeof saved.credential === 'string') {
            return saved;
        }
    } catch (e) {
        // a damaged entry is the same as none
    }
    return null;
}

export function saveSession(kind, credential) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({kind, credential}));
}

export function clearSession() {
    sessionStorage.removeItem(STORAGE_KEY);
}

// Calls METHOD PATH (relative to the API prefix) and answers the parsed JSON, or
// the text when `raw`; throws ApiError for an error answer or a network failure.
export async function call(method, path, body, {raw = false, session = currentSession()} = {}) {
    const headers = {};
    if (session) headers.Authorization = 'Bearer ' + session.credential;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
        response = await fetch(API_PREFIX + path, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            cache: 'no-store',
            credentials: 'omit',
        });
    } catch (e) {
        throw new ApiError(0, 'network_error', 'the management API could not be reached (' + e.message + ')');
    }
    const text = await response.text();
    if (!response.ok) {
        let code = 'http_' + response.status;
        let message = text.slice(0, 300) || response.statusText;
        try {
            const parsed = JSON.parse(text);
            if (parsed && parsed.error) {
                code = parsed.error.code || code;
                message = parsed.error.message || message;
            }
        } catch (e) {
            // not JSON: the text as it came
        }
        throw new ApiError(response.status, code, message);
    }
    if (raw) return text;
    try {
        return JSON.parse(text);
    } catch (e) {
        throw new ApiError(response.status, 'bad_answer', 'the API answered something that is not JSON');
    }
}

export const get = (path, options) => call('GET', path, undefined, options);
export const put = (path, body) => call('PUT', path, body);
export const post = (path, body) => call('POST', path, body);
export const del = (path) => call('DELETE', path);

// One path segment (ids are [A-Za-z0-9_.@+-], but the page never trusts that).
export const seg = (id) => encodeURIComponent(id);

// A random token for idempotency keys: crypto.getRandomValues works on plain
// http too, where crypto.randomUUID does not.
export function randomToken() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
