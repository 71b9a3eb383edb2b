// A real OpenID Connect provider for the single sign-on tests (node's `oidc-provider`, on
// loopback). Started by tests/auth/sso/provider.py with a JSON configuration file:
//   {"clients": [{client_id, client_secret, redirect_uris}], "accounts": {login: {claims}},
//    "signing_key": private JWK, "stranger_key": private JWK (signs the tampered tokens)}
// It prints one JSON line {"issuer": ...} once it listens, then serves until killed.
//
// The interaction (login and consent pages) completes at once for the account named by the
// authorization request's `login_hint`: the tests drive the browser's redirects themselves.
// Test controls, beside the provider's own routes (loopback only, no authentication):
//   PUT  /__test/accounts/{login}  {claims}: adds or changes an account
//   POST /__test/rotate {"key"}    this new signing key (a private JWK); the old one
//                                  leaves the JWKS
//   POST /__test/tamper {"mode"}   the next token response carries an altered ID token:
//                                  bad-signature, unknown-kid, claims (with "claims": {...})
//   GET  /__test/stats             {"jwks_requests": n, "token_requests": n}
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const stats = { jwks_requests: 0, token_requests: 0 };
let tamper = null;

// The keys come from the harness: Node 20 can deadlock when a key object made by
// generateKeyPairSync is exported as a JWK while the garbage collector frees its key
// generation job (both take the key's mutex), and hung about one start in thirty here.
let signingKey = config.signing_key;
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

function makeProvider() {
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...c,
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: ['sso-tests-cookie-key'] },
    pkce: { required: () => true },
    // Scope claims in the ID token itself, as Entra ID sends them.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub', 'groups', 'roles', 'tid'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => {
      const claims = config.accounts[id];
      if (!claims) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let provider = makeProvider();

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const accountId = details.params.login_hint;
  if (!config.accounts[accountId]) {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: `no test account ${accountId}`,
    });
  }
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  return provider.interactionFinished(
    req,
    res,
    { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function altered(idToken, change) {
  const [header, payload] = idToken.split('.');
  const claims = { ...b64json(payload), ...(change.claims || {}) };
  let key = crypto.createPrivateKey({ key: signingKey, format: 'jwk' });
  let kid = b64json(header).kid;
  if (change.mode === 'bad-signature' || change.mode === 'unknown-kid') {
    key = crypto.createPrivateKey({ key: config.stranger_key, format: 'jwk' });
  }
  if (change.mode === 'unknown-kid') kid = crypto.randomUUID();
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(key);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// Rewrites the token endpoint's JSON answer when a tamper mode is armed (one response).
function tamperingResponse(res) {
  const change = tamper;
  tamper = null;
  const end = res.end.bind(res);
  const chunks = [];
  res.write = (chunk) => { chunks.push(Buffer.from(chunk)); return true; };
  res.end = (chunk, ...rest) => {
    if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
    const text = Buffer.concat(chunks).toString('utf8');
    let body;
    try { body = JSON.parse(text); } catch { body = null; }
    if (!body || !body.id_token) { res.removeHeader('content-length'); return end(text); }
    altered(body.id_token, change).then((token) => {
      const out = JSON.stringify({ ...body, id_token: token });
      res.setHeader('content-length', Buffer.byteLength(out));
      end(out);
    });
    return res;
  };
}

server.on('request', async (req, res) => {
  try {
    const path = new URL(req.url, issuer).pathname;
    if (path === '/__test/rotate' && req.method === 'POST') {
      signingKey = (await readJson(req)).key;
      provider = makeProvider();
      return reply(res, 200, { kid: signingKey.kid });
    }
    if (path === '/__test/tamper' && req.method === 'POST') {
      tamper = await readJson(req);
      return reply(res, 200, tamper);
    }
    if (path === '/__test/stats') return reply(res, 200, stats);
    if (path.startsWith('/__test/accounts/') && req.method === 'PUT') {
      const login = decodeURIComponent(path.slice('/__test/accounts/'.length));
      config.accounts[login] = await readJson(req);
      return reply(res, 200, config.accounts[login]);
    }
    if (path.startsWith('/interaction/')) return await interaction(req, res);
    if (path === '/jwks') stats.jwks_requests += 1;
    if (path === '/token') {
      stats.token_requests += 1;
      if (tamper) tamperingResponse(res);
    }
    return provider.callback()(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) reply(res, 500, { error: String(err) });
  }
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(JSON.stringify({ issuer }));
