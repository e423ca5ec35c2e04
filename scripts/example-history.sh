#!/usr/bin/env bash
# Creates a git repository of the example Co-op Cloud recipe (examples/coop-hello) with three
# annotated releases, as a maintainer's recipe repository would have them:
#   1.0.0+1  app and store on seatrial-fixture/web:1
#   1.1.0+1  same images, release notes for the GREETING setting
#   2.0.0+2  app and store on seatrial-fixture/web:2 (the tree in examples/coop-hello)
# plus one lightweight tag `wip` that is not a version.
#   scripts/example-history.sh DEST_DIR
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../examples/coop-hello" && pwd)
dest=${1:?usage: example-history.sh DEST_DIR}
[ ! -e "$dest" ] || { echo "example-history.sh: $dest exists; give a new directory" >&2; exit 2; }
mkdir -p "$dest"
cd "$dest"
git init -q -b main
git config user.email "maintainer@example.org"
git config user.name "Recipe Maintainer"
git config commit.gpgsign false
git config tag.gpgsign false

release() { # <version> <image tag> <release notes to keep...>
  local version=$1 image=$2; shift 2
  find . -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
  cp -a "$src/." .
  sed -i "s#seatrial-fixture/web:2#seatrial-fixture/web:$image#g; s#version=2.0.0+2#version=$version#" compose.yml
  for notes in release/*; do
    keep=no
    for k in "$@"; do [ "$notes" = "release/$k" ] && keep=yes; done
    [ $keep = yes ] || rm -f "$notes"
  done
  git add -A
  git commit -q -m "Release $version"
  git tag -a "$version" -m "Release $version"
}
release 1.0.0+1 1 1.0.0+1
release 1.1.0+1 1 1.0.0+1 1.1.0+1
release 2.0.0+2 2 1.0.0+1 1.1.0+1 2.0.0+2
git tag wip HEAD~1
echo "example-history.sh: $dest has releases $(git tag -l '*+*' | tr '\n' ' ')" >&2
