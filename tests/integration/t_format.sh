#!/usr/bin/env bash
# The C sources follow .clang-format (clang-format --dry-run reports nothing).
set -euo pipefail
cd "${AE_SRCDIR:?}"
command -v clang-format >/dev/null || { echo "clang-format is not installed (./install.sh deps)"; exit 1; }
files=$(find conf tls state proxy tests/unit tests/tools -name '*.[ch]' | sort)
out=$(clang-format --dry-run $files 2>&1 || true)
if [ -n "$out" ]; then
    printf '%s\n' "$out" | head -40
    echo "[t_format] FAIL: files not clang-format clean: $(printf '%s\n' "$out" | grep -o '^[^:]*\.[ch]' | sort -u | tr '\n' ' ')"
    exit 1
fi
echo "[t_format] $(wc -w <<<"$files") files clang-format clean"
