#!/usr/bin/env bash
# Issue 15's benchmark, for what is built so far: a line of four network
# namespaces N0–N1–N2–N3 joined by veth pairs, and in one run on this
# machine:
#   - the raw veth (iperf3 N0→N1): the ceiling;
#   - userspace WireGuard (Debian's wireguard-go) over one hop (iperf3);
#   - Yggdrasil (Debian's package) over 1 and 3 hops (iperf3 over its TUN);
#   - fogwire: one route stream over 1 and 3 hops (`fogwire route send`),
#     a download through fogwire's SOCKS proxy and an exit over 1 and 3
#     hops (curl --socks5-hostname from a server on the exit's host), and
#     iperf3 over fogwire's VPN (node to node) over 1 and 3 hops.
#
# Needs root, iproute2, iperf3, curl, python3, yggdrasil, wireguard-go and
# wireguard-tools:
#   apt-get install -y iperf3 curl python3 yggdrasil wireguard-go wireguard-tools
# Usage: scripts/bench-netns.sh [path/to/fogwire]   (default: a release build)
set -euo pipefail

FOGWIRE=${1:-${CARGO_TARGET_DIR:-target}/release/fogwire}
SECS=${SECS:-5}
TAG=fwb$$
WORK=$(mktemp -d /tmp/fogwire-bench-netns.XXXXXX)
for tool in ip iperf3 curl python3 yggdrasil wireguard-go wg; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (see the header of $0)" >&2; exit 1; }
done
[ -x "$FOGWIRE" ] || { echo "no fogwire binary at $FOGWIRE: cargo build --release -p fogwire" >&2; exit 1; }
FOGWIRE=$(readlink -f "$FOGWIRE")

ns() { echo "${TAG}n$1"; }
inns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
PIDS=()
# Starts a program in the background in namespace $1, remembering its PID
# (`ip netns exec` execs it, so this is the program's own PID; a function
# run with & would leave only a subshell's PID, and the program running).
spawn() { local n=$1 log=$2; shift 2; ip netns exec "$(ns "$n")" "$@" >"$log" 2>&1 & PIDS+=($!); }
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Anything else still running from this run (iperf3 daemons, say).
    pkill -f "$WORK" 2>/dev/null || true
    sleep 0.5
    for i in 0 1 2 3; do ip netns del "$(ns "$i")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "  $*" >&2; }
gbit() { python3 -c "import sys; print(f'{float(sys.argv[1]) / 1e9:.2f}')" "$1"; }
iperf_bps() { python3 -c "import json,sys; print(json.load(sys.stdin)['end']['sum_received']['bits_per_second'])"; }

echo "setting up 4 namespaces in a line…" >&2
for i in 0 1 2 3; do
    ip netns add "$(ns "$i")"
    inns "$i" ip link set lo up
done
for i in 0 1 2; do
    j=$((i + 1))
    ip link add "${TAG}a$i" netns "$(ns "$i")" type veth peer name "${TAG}b$i" netns "$(ns "$j")"
    inns "$i" ip addr add "10.99.$j.1/24" dev "${TAG}a$i"
    inns "$j" ip addr add "10.99.$j.2/24" dev "${TAG}b$i"
    inns "$i" ip link set "${TAG}a$i" up
    inns "$j" ip link set "${TAG}b$i" up
done

declare -A RESULT

# ----- the raw veth -----
say "raw veth, 1 hop (iperf3)"
inns 1 iperf3 -s -D -1 >/dev/null
sleep 0.5
RESULT[raw1]=$(inns 0 iperf3 -c 10.99.1.2 -t "$SECS" -J | iperf_bps)

# ----- wireguard-go, one hop -----
say "wireguard-go, 1 hop (iperf3)"
for i in 0 1; do
    (umask 077; wg genkey > "$WORK/wg$i.key")
    wg pubkey < "$WORK/wg$i.key" > "$WORK/wg$i.pub"
done
# Each namespace's interface has a name of its own: wireguard-go's control
# socket (/var/run/wireguard/<name>.sock) is not in the namespace.
for i in 0 1; do
    spawn "$i" "$WORK/wg$i.log" env WG_PROCESS_FOREGROUND=1 wireguard-go "${TAG}w$i"
done
for i in 0 1; do
    for _ in $(seq 1 50); do inns "$i" ip link show "${TAG}w$i" >/dev/null 2>&1 && break; sleep 0.1; done
done
for i in 0 1; do
    other=$((1 - i))
    inns "$i" wg set "${TAG}w$i" private-key "$WORK/wg$i.key" listen-port 51820 \
        peer "$(cat "$WORK/wg$other.pub")" endpoint "10.99.1.$((other + 1)):51820" \
        allowed-ips "10.98.0.$((other + 1))/32"
    inns "$i" ip addr add "10.98.0.$((i + 1))/24" dev "${TAG}w$i"
    inns "$i" ip link set "${TAG}w$i" up
done
inns 1 iperf3 -s -D -1 >/dev/null
sleep 0.5
RESULT[wg1]=$(inns 0 iperf3 -c 10.98.0.2 -t "$SECS" -J | iperf_bps)

# ----- Yggdrasil, 1 and 3 hops -----
say "Yggdrasil, 1 and 3 hops (iperf3 over its TUN)"
for i in 0 1 2 3; do
    yggdrasil -genconf -json > "$WORK/ygg$i.raw"
    peers="[]"
    [ "$i" -gt 0 ] && peers="[\"tcp://10.99.$i.1:7200\"]"
    python3 - "$WORK/ygg$i.raw" "$WORK/ygg$i.conf" "$peers" "${TAG}y$i" <<'PY'
import json, sys
conf = json.load(open(sys.argv[1]))
conf.update({"Peers": json.loads(sys.argv[3]), "Listen": ["tcp://0.0.0.0:7200"],
             "AdminListen": "none", "MulticastInterfaces": [], "IfName": sys.argv[4]})
json.dump(conf, open(sys.argv[2], "w"))
PY
    spawn "$i" "$WORK/ygg$i.log" yggdrasil -useconffile "$WORK/ygg$i.conf"
done
YGG1=$(yggdrasil -useconffile "$WORK/ygg1.conf" -address)
YGG3=$(yggdrasil -useconffile "$WORK/ygg3.conf" -address)
for _ in $(seq 1 60); do
    inns 0 ping -6 -c 1 -W 1 "$YGG3" >/dev/null 2>&1 && break
    sleep 1
done
for n in 1 3; do
    addr=YGG$n
    inns "$n" iperf3 -s -D -1 >/dev/null
    sleep 0.5
    RESULT[ygg$n]=$(inns 0 iperf3 -c "${!addr}" -t "$SECS" -J | iperf_bps)
done
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
PIDS=()
sleep 1

# ----- fogwire -----
say "fogwire: route streams and SOCKS downloads, 1 and 3 hops"
for i in 0 1 2 3; do
    home="$WORK/fw$i"
    "$FOGWIRE" --home "$home" init --listen 0.0.0.0:7100 --api 127.0.0.1:7101 >/dev/null
    if [ "$i" = 1 ] || [ "$i" = 3 ]; then
        python3 - "$home/fogwire.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read().replace("[exit]\n", "[exit]\nserve = true\nallow = [\"127.0.0.1/32\"]\n", 1)
open(path, "w").write(text)
PY
    fi
    spawn "$i" "$WORK/fw$i.log" "$FOGWIRE" --home "$home" node
done
for i in 0 1 2 3; do
    for _ in $(seq 1 100); do [ -e "$WORK/fw$i/data/api.addr" ] && break; sleep 0.1; done
done
fw() { local n=$1; shift; inns "$n" "$FOGWIRE" --home "$WORK/fw$n" "$@"; }
ID1=$(fw 1 id); ID3=$(fw 3 id)
for i in 0 1 2; do
    fw "$i" connect "$(fw $((i + 1)) id)@10.99.$((i + 1)).2:7100" >/dev/null
done
for _ in $(seq 1 100); do
    fw 0 exits --json | python3 -c "
import json, sys
exits = {e['node_id']: e for e in json.load(sys.stdin)['exits']}
sys.exit(0 if all(exits.get(i, {}).get('hops') for i in sys.argv[1:]) else 1)" "$ID1" "$ID3" && break
    sleep 0.2
done
for n in 1 3; do
    id=ID$n
    RESULT[route$n]=$(fw 0 route send "${!id}" --hops "$n" --bytes 4G --json \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['mbit_per_sec'] * 1e6)")
done
# iperf3 over the VPN, node to node, by the nodes' derived addresses.
for i in 0 1 3; do fw "$i" vpn up >/dev/null; done
for n in 1 3; do
    addr=$(fw "$n" ip)
    for _ in $(seq 1 50); do inns 0 ping -6 -c 1 -W 1 "$addr" >/dev/null 2>&1 && break; sleep 0.2; done
    inns "$n" iperf3 -s -D -1 >/dev/null
    sleep 0.5
    RESULT[vpn$n]=$(inns 0 iperf3 -c "$addr" -t "$SECS" -J | iperf_bps)
done
# A server on each exit's host, on its loopback (which the exits allow).
head -c $((2 << 30)) /dev/zero > "$WORK/big"
for n in 1 3; do
    spawn "$n" /dev/null python3 -m http.server 8080 --bind 127.0.0.1 --directory "$WORK"
    spawn 0 /dev/null "$FOGWIRE" --home "$WORK/fw0" proxy --listen "127.0.0.1:108$n" \
        --exit "$(eval echo \$ID$n)" --min-hops "$n"
done
sleep 2
for n in 1 3; do
    bytes_per_sec=$(inns 0 curl -s -o /dev/null --max-time $((SECS * 6)) -w '%{speed_download}' \
        --socks5-hostname "127.0.0.1:108$n" "http://127.0.0.1:8080/big")
    RESULT[socks$n]=$(python3 -c "print(float('$bytes_per_sec') * 8)")
done
# The server alone, in the exit's namespace: what it can serve at most.
RESULT[server]=$(inns 1 curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:8080/big" \
    | python3 -c "import sys; print(float(sys.stdin.read()) * 8)")

printf '\n%-34s %10s %12s\n' "PATH (same run, this machine)" "GBIT/S" "×YGGDRASIL"
row() {
    local name=$1 value=$2 ygg=${3:-}
    if [ -n "$ygg" ]; then
        printf '%-34s %10s %12s\n' "$name" "$(gbit "$value")" \
            "$(python3 -c "print(f'{$value / $ygg:.2f}')")"
    else
        printf '%-34s %10s %12s\n' "$name" "$(gbit "$value")" "-"
    fi
}
row "raw veth, 1 hop (iperf3)" "${RESULT[raw1]}"
row "wireguard-go, 1 hop (iperf3)" "${RESULT[wg1]}"
row "Yggdrasil, 1 hop (iperf3)" "${RESULT[ygg1]}" "${RESULT[ygg1]}"
row "Yggdrasil, 3 hops (iperf3)" "${RESULT[ygg3]}" "${RESULT[ygg3]}"
row "fogwire route stream, 1 hop" "${RESULT[route1]}" "${RESULT[ygg1]}"
row "fogwire route stream, 3 hops" "${RESULT[route3]}" "${RESULT[ygg3]}"
row "fogwire VPN, 1 hop (iperf3)" "${RESULT[vpn1]}" "${RESULT[ygg1]}"
row "fogwire VPN, 3 hops (iperf3)" "${RESULT[vpn3]}" "${RESULT[ygg3]}"
row "fogwire SOCKS download, 1 hop" "${RESULT[socks1]}" "${RESULT[ygg1]}"
row "fogwire SOCKS download, 3 hops" "${RESULT[socks3]}" "${RESULT[ygg3]}"
row "(the HTTP server alone, loopback)" "${RESULT[server]}"
printf '\nfogwire VPN over 1 hop: %s × wireguard-go over the same hop\n' \
    "$(python3 -c "print(f'{${RESULT[vpn1]} / ${RESULT[wg1]}:.2f}')")"
