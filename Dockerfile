# keylatch: the SIP edge and media relay. node-gyp needs g++, make and python3 for the
# native fast path (native/fastpath.c); they stay in the build stage. liburing-dev lets the room
# mixer batch its sends through io_uring (linked statically: the runtime image needs nothing);
# under a seccomp profile that blocks io_uring (Docker's default since 25.0) it sends one by one.
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ make python3 liburing-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci
# Exactly what tsconfig.build.json compiles (test/build/dockerfile.test.ts builds from these
# COPY lines alone); bench/ and test/ are not part of the image.
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY types ./types
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/build ./build
COPY --from=build /app/dist ./dist
COPY config ./config
COPY package.json ./
# The bin's shebang sets --max-semi-space-size=1; keep it when starting node directly.
ENTRYPOINT ["node", "--max-semi-space-size=1", "dist/src/cli.js"]
CMD ["edge"]
