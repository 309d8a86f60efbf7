import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The dev server's origin, http://localhost:5173, is the service's default `cors_origins`.
export default defineConfig({
  plugins: [react()],
  server: { host: "localhost", port: 5173, strictPort: true },
  preview: { host: "localhost", port: 5173, strictPort: true },
});
