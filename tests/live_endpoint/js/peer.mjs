// The JavaScript SDK (@google/genai) as a peer of geminid's Live endpoint.
//
// Configured only through the SDK's public options: `apiKey` (geminid's local token) and
// `httpOptions.baseUrl` (geminid's base_url, optionally with /sessions/NAME). TLS trust comes
// from the environment (NODE_EXTRA_CA_CERTS = the endpoint's ca_file), as a user would set it.
//
// Input: one JSON argument {baseUrl, apiKey, model, turns: [text...], apiVersion?, headers?,
// handle?, pauseAfter?}. With pauseAfter = N the peer prints {"event": "paused"} after turn N
// and waits for a line on stdin (the test does something to the upstream meanwhile). With
// untilHeard, a turn's answer is read until it names the turn's text (the fake's replies do): a
// turn replayed into a new conversation may be answered first.
// Output: one JSON line per event the test checks:
//   {"event": "turn", "text": "...", "handle": "<last resumable newHandle or null>"}
//   {"event": "closed", "code": N, "reason": "..."}
// Exit 0 once every turn was answered and the session was closed by us; 1 on any error.

import { GoogleGenAI, Modality } from '@google/genai';

const args = JSON.parse(process.argv[2]);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Messages arrive through callbacks; a queue turns them into something to await.
const queue = [];
let wake = null;
function push(item) {
  queue.push(item);
  if (wake) {
    const w = wake;
    wake = null;
    w();
  }
}
async function next() {
  while (queue.length === 0) {
    await new Promise((resolve) => { wake = resolve; });
  }
  return queue.shift();
}

const ai = new GoogleGenAI({
  apiKey: args.apiKey,
  // apiVersion only when asked: the SDK's default (v1beta) is what a user's code has.
  httpOptions: {
    baseUrl: args.baseUrl,
    ...(args.apiVersion ? { apiVersion: args.apiVersion } : {}),
    ...(args.headers ? { headers: args.headers } : {}),
  },
});

const config = {
  responseModalities: [Modality.TEXT],
  systemInstruction: 'You are a test.',
  sessionResumption: args.handle ? { handle: args.handle } : {},
};

// connect() waits for the WebSocket to open and then for setupComplete, and never settles when
// the connection fails first (a refused upgrade, a TLS error): race it against the callbacks.
let failed = null;
let connected = false;
const failure = new Promise((resolve) => { failed = resolve; });
let closedByUs = false;
const session = await Promise.race([
  ai.live.connect({
    model: args.model,
    config,
    callbacks: {
      onmessage: (msg) => push({ kind: 'message', msg }),
      onerror: (e) => {
        push({ kind: 'error', error: String(e?.message ?? e) });
        if (!connected) failed({ event: 'error', error: String(e?.message ?? e) });
      },
      onclose: (e) => {
        push({ kind: 'close', code: e.code, reason: String(e.reason ?? '') });
        if (!connected) failed({ event: 'closed', code: e.code, reason: String(e.reason ?? '') });
      },
    },
  }),
  failure.then((what) => {
    emit(what);
    process.exit(1);
  }),
]);
connected = true;

async function stdinLine() {
  return new Promise((resolve) => process.stdin.once('data', resolve));
}

let handle = null;
let done = 0;
for (const text of args.turns) {
  if (args.pauseAfter && done === args.pauseAfter) {
    emit({ event: 'paused' });
    await stdinLine();
  }
  session.sendClientContent({ turns: [{ role: 'user', parts: [{ text }] }], turnComplete: true });
  let answer = '';
  for (;;) {
    const item = await next();
    if (item.kind === 'error') {
      emit({ event: 'error', error: item.error });
      process.exit(1);
    }
    if (item.kind === 'close') {
      emit({ event: 'closed', code: item.code, reason: item.reason });
      process.exit(1);
    }
    const msg = item.msg;
    const upd = msg.sessionResumptionUpdate;
    if (upd && upd.resumable && upd.newHandle) {
      handle = upd.newHandle;
    }
    const content = msg.serverContent;
    if (content?.modelTurn?.parts) {
      for (const part of content.modelTurn.parts) {
        answer += part.text ?? '';
      }
    }
    if (content?.turnComplete) {
      if (!args.untilHeard || answer.includes(`heard "${text}"`)) break;
      answer = '';
    }
  }
  emit({ event: 'turn', text: answer, handle });
  done += 1;
}

// The resumption update that follows turnComplete carries the newest handle: wait for it
// briefly (it is already queued or on its way), then close.
closedByUs = true;
session.close();
for (;;) {
  const item = await next();
  if (item.kind === 'message') {
    const upd = item.msg.sessionResumptionUpdate;
    if (upd && upd.resumable && upd.newHandle) {
      handle = upd.newHandle;
    }
    continue;
  }
  if (item.kind === 'close') {
    emit({ event: 'closed', code: item.code, reason: item.reason, handle, byUs: closedByUs });
    break;
  }
  if (item.kind === 'error') {
    emit({ event: 'error', error: item.error });
    process.exit(1);
  }
}
process.exit(0);
