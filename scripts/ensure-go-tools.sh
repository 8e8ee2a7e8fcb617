#!/usr/bin/env bash
# Builds the real tools `make check-deploy` runs beside its Python renderer,
# from their Go modules through the Go module proxy, pinned, into a cache
# outside the repository:
#
#   promtool  (github.com/prometheus/prometheus v0.316.0): `check rules` and
#             `test rules` on deploy/prometheus/
#   helm      (helm.sh/helm/v4 v4.3.2): `helm lint --strict`, `helm template`
#   jaeger    (github.com/jaegertracing/jaeger v1.75.0, the v2 binary): the
#             trace backend the end-to-end trace test exports to and reads
#             back from (waybill-testkit::jaeger, WAYBILL_JAEGER)
#
# Prints the folder holding all three. Idempotent and instant once cached; the
# first build takes about 5 (promtool), 2 (helm) and 10 (jaeger) minutes on
# 2 cores, module downloads included.
#
# WAYBILL_CACHE (default ~/.cache/waybill) chooses the cache directory; the
# module cache goes to $WAYBILL_CACHE/go-mod.
set -euo pipefail

promtool_version=v0.316.0
helm_version=v4.3.2
jaeger_version=v1.75.0
cache="${WAYBILL_CACHE:-$HOME/.cache/waybill}"
bin="$cache/go-tools/bin-promtool-$promtool_version-helm-$helm_version-jaeger-$jaeger_version"

if [ -x "$bin/promtool" ] && [ -x "$bin/helm" ] && [ -x "$bin/jaeger" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "ensure-go-tools: 'go' not found; promtool and helm are built from their Go modules" >&2
  exit 1
fi
mkdir -p "$bin"
export GOMODCACHE="$cache/go-mod"
if [ ! -x "$bin/promtool" ]; then
  echo "building promtool $promtool_version (first time only, ~5 min)..." >&2
  GOBIN="$bin" go install "github.com/prometheus/prometheus/cmd/promtool@$promtool_version" >&2
fi
if [ ! -x "$bin/helm" ]; then
  echo "building helm $helm_version (first time only, ~5 min)..." >&2
  GOBIN="$bin" go install "helm.sh/helm/v4/cmd/helm@$helm_version" >&2
fi
if [ ! -x "$bin/jaeger" ]; then
  # Jaeger's module has replace directives: `go install pkg@version` refuses
  # it, so it is built as a tool of a throwaway module.
  echo "building jaeger $jaeger_version (first time only, ~10 min)..." >&2
  module="$cache/go-tools/jaeger-module-$jaeger_version"
  mkdir -p "$module"
  printf 'module waybill.local/jaeger-tool\n\ngo 1.26\n' > "$module/go.mod"
  (cd "$module" \
    && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$jaeger_version" >&2 \
    && go build -o "$bin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2)
fi
echo "$bin"
