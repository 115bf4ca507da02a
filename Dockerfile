# fhir-facade: multi-stage build on Node 24 LTS slim, running as a non-root user.
# Node 24 is the newest of the versions package.json "engines" allows (^20.19 || ^22.12 || ^24);
# Node 20 is past end of life (April 2026). Keep this major and "engines" in agreement
# (tests/docs/deployment.test.ts checks it).
# Not exercised by CI (no Docker engine on the CI machines): keep it correct by review.

# --- build: install dependencies (better-sqlite3 compiles from source here) ---
FROM node:24-bookworm-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# swagger-ui-dist's telemetry postinstall stays off, whether or not this npm honours allowScripts
ENV SCARF_ANALYTICS=false
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY db ./db
COPY scripts ./scripts
COPY fhir-profiles ./fhir-profiles
# the serving process runs the esbuild bundle (dist/main.js): no TypeScript loader at run time
RUN node scripts/build.mjs --force
# the bundle's V8 code cache, made by one start here: /app stays root's, so no start in the image
# could write it (docs/operations.md). Same Node, no flags, as CMD runs it
RUN node scripts/warmCodeCache.mjs

# --- runtime ---
FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data
WORKDIR /app
COPY --from=build --chown=root:root /app /app
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/main.js"]
