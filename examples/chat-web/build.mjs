// Bundles src/main.js and its npm dependencies into dist/app.js (no CDN: the page loads only its own files).
import { build } from 'esbuild';

await build({
  entryPoints: ['src/main.js'],
  outfile: 'dist/app.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
  define: {
    // ic-websocket-js reads its log level from process.env, which browsers do not have.
    'process.env.LOG_LEVEL': '"warn"',
    // Some CBOR dependencies of @dfinity/agent refer to Node's `global`.
    global: 'globalThis',
  },
});
