#!/usr/bin/env bash
# Test fixtures only: local stand-ins for the public images docker-compose.yml names, because no
# image registry is reachable here. Users pull the real ones. Each image carries a label with a
# hash of what it was built from, and is rebuilt only when that changes.
#   debian:bookworm-slim        debootstrap --variant=minbase from the mirror apt is configured with
#   node:20-bookworm(-slim)     that root file system + this host's Node 20 binary
#   drachtio/drachtio-server    that root file system + the drachtio binary (DRACHTIO_BIN or PATH) + its libraries
#   redis:7                     that root file system + Debian's redis-server
set -euo pipefail
log() { echo "standins: $*" >&2; }
work=$(mktemp -d /tmp/kl-standins-XXXXXX)
trap 'rm -rf "$work"' EXIT

# The first Debian (not security) mirror in apt's sources, one-line or deb822 format.
mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      /^deb / && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }
      /^URIs:/ && $0 !~ /security/ { print $2; exit }' "$f"
  done | head -1
}

label() { podman image inspect --format '{{index .Labels "keylatch.standin"}}' "$1" 2>/dev/null || true; }
key() { sha256sum | cut -c1-16; }

# debian:bookworm-slim
MIRROR=$(mirror)
[ -n "$MIRROR" ] || { log "no Debian mirror in /etc/apt/sources*"; exit 1; }
# The root file system changes with the mirror's content, not its address; keyed per day so a
# stale cache never outlives a point release by long.
debkey=$(printf 'debian %s %s v1' "$MIRROR" "$(date +%Y-%m-%d)" | key)
if [ "$(label docker.io/library/debian:bookworm-slim)" != "$debkey" ]; then
  log "debootstrap bookworm from apt's mirror (a few minutes)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # The mirror apt inside the image uses, as on the host; apt's caches emptied as in the official slim image.
  echo "deb $MIRROR bookworm main" >"$work/rootfs/etc/apt/sources.list"
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
  tar -C "$work/rootfs" -c . | podman import --change "LABEL keylatch.standin=$debkey" --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim >/dev/null
  rm -rf "$work/rootfs"
else
  log "debian:bookworm-slim cached"
fi

# node:20-bookworm and node:20-bookworm-slim: one stand-in, this host's node and npm (the
# Dockerfile's build stage installs its own compilers).
NODE=$(command -v node)
case "$("$NODE" --version)" in v20.*) ;; *) log "need Node 20 on PATH, found $("$NODE" --version)"; exit 1 ;; esac
NPM=$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")
# This machine may reach registries through a TLS-inspecting proxy whose CA only the host's
# bundle holds: node in the stand-in trusts what node on the host trusts (NODE_EXTRA_CA_CERTS),
# so `npm ci` in the Dockerfiles works here as it does for users. node-gyp gets the headers
# the official image ships in /usr/local/include/node, and is told to use them (nodejs.org,
# where it would fetch them, may be out of reach here).
HOST_CA=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
HEADERS=$(dirname "$(dirname "$(readlink -f "$NODE")")")/include/node
[ -f "$HEADERS/node.h" ] || { log "no Node headers at $HEADERS (node-gyp needs them)"; exit 1; }
nodekey=$( { echo "$debkey v3"; sha256sum "$NODE"; cat "$NPM/package.json"; cat "$HOST_CA" 2>/dev/null; cat "$HEADERS/node_version.h"; } | key)
if [ "$(label docker.io/library/node:20-bookworm-slim)" != "$nodekey" ]; then
  log "node:20-bookworm(-slim) from $NODE and $NPM"
  mkdir -p "$work/node"
  cp "$NODE" "$work/node/node"
  cp -r "$NPM" "$work/node/npm"
  cp -r "$HEADERS" "$work/node/include"
  if [ -s "$HOST_CA" ]; then cp "$HOST_CA" "$work/node/host-ca.crt"; else : >"$work/node/host-ca.crt"; fi
  cat >"$work/node/Containerfile" <<'DOCKERFILE'
FROM docker.io/library/debian:bookworm-slim
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY host-ca.crt /usr/local/share/keylatch-standin/host-ca.crt
COPY include /usr/local/include/node
ENV NODE_EXTRA_CA_CERTS=/usr/local/share/keylatch-standin/host-ca.crt npm_config_nodedir=/usr/local
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
DOCKERFILE
  podman build --pull=never --network none -q --label "keylatch.standin=$nodekey" -t docker.io/library/node:20-bookworm-slim "$work/node" >/dev/null
  rm -rf "$work/node"
else
  log "node:20-bookworm(-slim) cached"
fi
podman tag docker.io/library/node:20-bookworm-slim docker.io/library/node:20-bookworm

# redis:7: Debian's redis-server, started as the official image starts it (redis-server, in /data).
rediskey=$(printf '%s redis v1' "$debkey" | key)
if [ "$(label docker.io/library/redis:7)" != "$rediskey" ]; then
  log "redis:7 from Debian's redis-server"
  mkdir -p "$work/redis"
  cat >"$work/redis/Containerfile" <<'DOCKERFILE'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/* && mkdir /data
WORKDIR /data
CMD ["redis-server"]
DOCKERFILE
  podman build --pull=never --network host -q --label "keylatch.standin=$rediskey" -t docker.io/library/redis:7 "$work/redis" >/dev/null
else
  log "redis:7 cached"
fi

# drachtio/drachtio-server: the binary this machine has, with the public image's contract
# (/entrypoint.sh; a first argument "drachtio" runs it with the rest; /etc/drachtio.conf.xml).
DRACHTIO=${DRACHTIO_BIN:-$(command -v drachtio || true)}
if [ -z "$DRACHTIO" ]; then
  log "no drachtio-server binary (DRACHTIO_BIN or PATH): drachtio/drachtio-server not built"
  exit 3
fi
DRACHTIO=$(readlink -f "$DRACHTIO")
drkey=$( { echo "$debkey drachtio v2"; sha256sum "$DRACHTIO"; } | key)
if [ "$(label docker.io/drachtio/drachtio-server:latest)" != "$drkey" ]; then
  log "drachtio/drachtio-server from $DRACHTIO"
  mkdir -p "$work/drachtio/lib"
  cp "$DRACHTIO" "$work/drachtio/drachtio"
  # Its shared libraries, except glibc's own, which the root file system has.
  ldd "$DRACHTIO" | awk '/=> \// { print $3 }' | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*)\.so' | while read -r lib; do cp -L "$lib" "$work/drachtio/lib/"; done
  cat >"$work/drachtio/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ "$1" = drachtio ]; then shift; exec /usr/local/bin/drachtio "$@"; fi
exec "$@"
SH
  cat >"$work/drachtio/drachtio.conf.xml" <<'XML'
<drachtio>
  <admin port="9022" secret="cymru">0.0.0.0</admin>
  <sip><contacts></contacts></sip>
  <cdrs>false</cdrs>
  <logging><console/><sofia-loglevel>0</sofia-loglevel><loglevel>info</loglevel></logging>
</drachtio>
XML
  cat >"$work/drachtio/Containerfile" <<'DOCKERFILE'
FROM docker.io/library/debian:bookworm-slim
COPY lib/ /usr/local/lib/
COPY drachtio /usr/local/bin/drachtio
COPY drachtio.conf.xml /etc/drachtio.conf.xml
COPY entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh && ldconfig && ! ldd /usr/local/bin/drachtio | grep "not found"
ENTRYPOINT ["/entrypoint.sh"]
CMD ["drachtio"]
DOCKERFILE
  podman build --pull=never --network none -q --label "keylatch.standin=$drkey" -t docker.io/drachtio/drachtio-server:latest "$work/drachtio" >/dev/null
else
  log "drachtio/drachtio-server cached"
fi
log "all stand-ins ready"
