// A service's browser-style OpenFeature client, run under Node: the official
// web SDK with its OFREP provider, polling the bulk evaluation of one
// service's flags with its ETag. Driven by tests/tests/ofrep.rs.
//
// Env: OFREP_BASE_URL (a service's base URL), TOKEN (an ID token), FLAG (a
// boolean flag), POLL_MS, TIMEOUT_MS. Prints one JSON line when ready and one
// when the flag's value changed (or timed out), each with the HTTP statuses
// the provider got so far.

// The provider is written for browsers: it listens for page visibility.
globalThis.document ??= {
  visibilityState: 'visible',
  addEventListener() {},
  removeEventListener() {},
};

const { OpenFeature, ProviderEvents } = await import('@openfeature/web-sdk');
const { OFREPWebProvider } = await import('@openfeature/ofrep-web-provider');

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`poll.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
};
const flag = env('FLAG');
const statuses = [];
const recordingFetch = async (input, init) => {
  const response = await fetch(input, init);
  statuses.push(response.status);
  return response;
};

const provider = new OFREPWebProvider({
  baseUrl: env('OFREP_BASE_URL'),
  headers: [['Authorization', `Bearer ${env('TOKEN')}`]],
  pollInterval: Number(env('POLL_MS')),
  changeDetection: 'polling',
  cacheMode: 'disabled',
  disableVisibilityRefresh: true,
  fetchImplementation: recordingFetch,
});
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();
const first = client.getBooleanDetails(flag, false);
const say = (event, details) =>
  console.log(
    JSON.stringify({ event, value: details.value, reason: details.reason, variant: details.variant, statuses }),
  );
say('ready', first);

const timeout = setTimeout(() => {
  say('timeout', client.getBooleanDetails(flag, false));
  process.exit(1);
}, Number(env('TIMEOUT_MS')));
client.addHandler(ProviderEvents.ConfigurationChanged, () => {
  const now = client.getBooleanDetails(flag, false);
  if (now.value !== first.value) {
    clearTimeout(timeout);
    say('changed', now);
    process.exit(0);
  }
});
