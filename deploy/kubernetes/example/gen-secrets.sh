#!/usr/bin/env bash
# Writes throwaway credentials for a test cluster into ./secrets next to this
# script: a CA, a peer certificate per storage node (URI SAN
# quorumq://node/<id>, DNS quorumq-<id>.quorumq-peer: the address in
# --peers), one for the API tier (quorumq://api/100) and an HS256 secret.
# Usage: gen-secrets.sh [namespace]  (adds the namespace's full DNS names)
set -euo pipefail
ns=${1:-default}
out="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$out"
umask 077
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=quorumq-ca -keyout ca.key -out ca.pem 2>/dev/null
cert() { # name uri dns...
  local name=$1 uri=$2 san="URI:$2"
  shift 2
  for d in "$@"; do san="$san,DNS:$d"; done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -out "$name.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san") 2>/dev/null
  rm "$name.csr"
}
for i in 1 2 3; do
  cert "node-$i" "quorumq://node/$i" "quorumq-$i.quorumq-peer" "quorumq-$i.quorumq-peer.$ns.svc" \
    "quorumq-$i.quorumq-peer.$ns.svc.cluster.local"
done
cert api-100 quorumq://api/100
head -c 48 /dev/urandom | base64 | tr -d '\n' > hs256.secret
rm -f ca.srl
echo "wrote $out (keep ca.key to sign more certificates; never commit it)"
