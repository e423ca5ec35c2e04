#!/usr/bin/env bash
# Build seatrial's own image without a registry or a base image: tags seatrial:<version> (the
# workspace version) and seatrial:latest on the local engine.
#
# What goes in (deploy/image/Dockerfile builds FROM scratch):
#   /usr/local/bin/seatrial   the release binary, linked statically against musl, its debug info
#                             split off (kept as <target dir>/…/release/seatrial.debug)
#   git, docker, curl         with the libraries they load, copied from this host's Debian
#                             packages: seatrial clones recipes and the forge's repositories with
#                             git; recipes' tests mostly use the docker CLI and curl
#   busybox                   busybox-static as /bin/sh and the usual tools (recipes' tests are
#                             shell scripts; git fetches from a local path through sh)
#   /etc/ssl/certs            the host's CA bundle (git over https; seatrial itself uses webpki roots)
#   /etc/passwd, /etc/group   root and the user seatrial runs as: seatrial, uid/gid 10001
#   /data                     the data directory (a volume), owned by 10001
#
# Usage: scripts/build-image.sh            (idempotent; an unchanged binary rebuilds from cache)
#        IMAGE=name scripts/build-image.sh  (tags name:<version> and name:latest instead)
# Needs: docker, binutils (objcopy), rustup (adds the musl target when missing), musl-tools
# (musl-gcc, for the C in ring and SQLite), busybox-static; scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "build-image.sh: $*" >&2; exit 1; }
target=x86_64-unknown-linux-musl
# The image's name (IMAGE=… for a trial build beside the real one).
image=${IMAGE:-seatrial}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || fail "cannot read the workspace version from Cargo.toml"
command -v docker >/dev/null || fail "docker not found; run scripts/setup.sh"
busybox=$(command -v busybox || true)
# Static: no shared library to load (`ldd` lists none with "=>"; it says "statically linked" or
# "not a dynamic executable").
static() { ! ldd "$1" 2>&1 | grep -q "=>"; }
[ -n "$busybox" ] && static "$busybox" \
  || fail "a static busybox is needed for /bin/sh; install busybox-static"
command -v objcopy >/dev/null || fail "objcopy not found; install binutils"
# The static musl build needs the Rust target and musl-gcc. Where the target cannot be had (a
# machine that reaches no toolchain download), the binary is built for the host's glibc instead
# and the image carries the glibc libraries it loads (it has them already, for git) — said loudly.
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "build-image.sh: adding the Rust target $target" >&2
  # Bounded: a machine that reaches no toolchain download must not wait on rustup's retries.
  timeout 300 rustup target add "$target" >&2 \
    || { echo "build-image.sh: warning: cannot add the Rust target $target; building for the host's glibc instead (not static)" >&2; target=x86_64-unknown-linux-gnu; }
fi
if [ "$target" != x86_64-unknown-linux-gnu ] && ! command -v musl-gcc >/dev/null; then
  echo "build-image.sh: warning: musl-gcc not found (install musl-tools; scripts/setup.sh does); building for the host's glibc instead (not static)" >&2
  target=x86_64-unknown-linux-gnu
fi

echo "build-image.sh: building the binary (cargo build --release --target $target)" >&2
cargo build --release --locked --quiet --target "$target" -p seatrial
bin=${CARGO_TARGET_DIR:-target}/$target/release/seatrial
[ -x "$bin" ] || fail "the build left no binary at $bin"
if [ "$target" = x86_64-unknown-linux-musl ]; then
  static "$bin" || fail "$bin is dynamically linked; a musl build must be static"
fi
# Split debug info: the image gets the binary without it (and a link naming its debug file);
# the debug info — line tables of seatrial's code, full for the C in SQLite and ring — stays
# next to the build as seatrial.debug, for a debugger or a symbolizer.
objcopy --only-keep-debug "$bin" "$bin.debug"
objcopy --strip-debug --add-gnu-debuglink="$bin.debug" "$bin" "$bin.shipped"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
# Debian 12's merged /usr: /bin, /lib and /lib64 are links into /usr, as on the host.
mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" \
  "$root/etc/ssl/certs" "$root/tmp" "$ctx/data"
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
chmod 1777 "$root/tmp"
cp "$bin.shipped" "$root/usr/local/bin/seatrial"

# A host file into the image at the same path (a link kept as a link, with what it points to).
# Directories are taken by their real path: /lib/x86_64-linux-gnu lands in /usr/lib/…, which
# the image's own /lib link leads to.
copy() {
  [ -e "$1" ] || fail "$1 is missing on this host"
  local dir name real
  dir=$(readlink -f "$(dirname "$1")")
  name=$(basename "$1")
  mkdir -p "$root$dir"
  cp -a "$dir/$name" "$root$dir/"
  real=$(readlink -f "$1")
  [ "$real" = "$dir/$name" ] || copy "$real"
}
# An executable and every library it loads (`ldd`: "libz.so.1 => /lib/.../libz.so.1 (0x…)",
# and the loader's own path).
copy_elf() {
  copy "$1"
  local lib
  while read -r lib; do copy "$lib"; done < <(ldd "$1" | awk '/=> \//{print $3} /^\t\//{print $1}')
}
# git (seatrial clones recipes and forge repositories with it), its remote helper for http(s) and
# the commands it runs by name; the docker CLI and curl, which recipes' tests use most.
for f in /usr/bin/git /usr/lib/git-core/git /usr/lib/git-core/git-remote-http /usr/bin/docker /usr/bin/curl; do
  copy_elf "$f"
done
for f in /usr/bin/git-upload-pack /usr/bin/git-receive-pack /usr/bin/git-upload-archive \
  /usr/lib/git-core/git-remote-https /usr/lib/git-core/git-upload-pack; do
  copy "$f"
done
# A glibc build (the fallback above) brings the libraries it loads.
if ! static "$bin.shipped"; then
  while read -r lib; do copy "$lib"; done < <(ldd "$bin.shipped" | awk '/=> \//{print $3} /^\t\//{print $1}')
fi
# git's templates (an init or a clone warns without them).
[ -d /usr/share/git-core/templates ] && copy /usr/share/git-core/templates
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" \
  || fail "no CA bundle at /etc/ssl/certs/ca-certificates.crt; install ca-certificates"
# busybox-static: /bin/sh (git fetches from a local path through it; recipes' tests are shell
# scripts) and the usual tools (grep, sed, wget, ...) where the host's files above left a gap.
cp "$busybox" "$root/usr/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
seatrial:x:10001:10001:seatrial:/data:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
seatrial:x:10001:
EOF
cp deploy/image/Dockerfile "$ctx/Dockerfile"

git_version=$(dpkg-query -W -f '${Version}' git 2>/dev/null || git --version)
docker_version=$(dpkg-query -W -f '${Version}' docker.io 2>/dev/null || docker --version)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if ! out=$(DOCKER_BUILDKIT=0 docker build -q \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$created" --build-arg "GIT_VERSION=$git_version" \
  --build-arg "DOCKER_VERSION=$docker_version" \
  -t "$image:$version" -t "$image:latest" "$ctx" 2>&1); then
  printf '%s\n' "$out" >&2
  fail "docker build failed (output above)"
fi
size=$(docker image inspect -f '{{.Size}}' "$image:$version")
echo "build-image.sh: built $image:$version and $image:latest ($((size / 1024 / 1024)) MiB; binary $(($(stat -c %s "$bin.shipped") / 1024 / 1024)) MiB; its debug info in $bin.debug)" >&2
