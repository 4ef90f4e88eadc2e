import { defineConfig } from "vite";

// The console is served by the binary under /ui/ (ui/embed.go); the build is
// committed (dist/), so it must be reproducible: no timestamps, content-hashed
// names, no source maps.
export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  server: {
    // `npx vite` for development: API calls go to a local `quorumq serve`.
    proxy: { "/v1": "http://127.0.0.1:8080" },
  },
});
