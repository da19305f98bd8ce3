# shellcheck shell=bash
# Shared logic for the local service stack (Kafka, Kafka Connect, Flink, Prometheus,
# Alertmanager).
# Sourced by stack/up, stack/down, stack/status, stack/env, stack/deps and the CLI wrappers.
#
# Layout:
#   $STACK_DIR (default <repo>/stack/.run)   everything a running stack writes: configs,
#                                            data, logs, pid files
#   $STACK_CACHE (~/.cache/streamguard) downloads: the Kafka classpath file (jars in
#                                            ~/.m2) and the Flink virtualenv
set -euo pipefail

STACK_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${STACK_DIR:=$STACK_HOME/.run}"
mkdir -p "$STACK_DIR"
STACK_DIR="$(cd "$STACK_DIR" && pwd)"
: "${STACK_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/streamguard}"
mkdir -p "$STACK_CACHE"

KAFKA_VERSION=4.1.1 # keep in sync with stack/pom.xml
: "${FLINK_VERSION:=2.3.0}"
: "${STACK_TIMEOUT:=180}" # seconds to wait for one service to become ready
: "${PROMETHEUS_BIN:=/usr/bin/prometheus}"
: "${PROMTOOL_BIN:=/usr/bin/promtool}"
: "${ALERTMANAGER_BIN:=/usr/bin/prometheus-alertmanager}"
: "${AMTOOL_BIN:=/usr/bin/amtool}"

STACK_SERVICES=(kafka connect flink prometheus alertmanager)

say() { echo "stack: $*" >&2; }
die() {
  echo "stack: error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# Ports. Precedence: the environment, then $STACK_DIR/ports.env (written by `up`, so that
# status/env/down of a stack started with overrides see the same ports), then defaults.
# ---------------------------------------------------------------------------------------
STACK_PORT_VARS=(KAFKA_PORT KAFKA_SASL_SSL_PORT KAFKA_MTLS_PORT KAFKA_CONTROLLER_PORT CONNECT_PORT FLINK_PORT FLINK_RPC_PORT PROMETHEUS_PORT PROMETHEUS_SCRAPE_TARGETS
  ALERTMANAGER_PORT ALERTMANAGER_WEBHOOK_URL)
# Alertmanager: 9093 (its usual port) is the Kafka controller's here, so 9094; its
# webhook receiver posts to ALERTMANAGER_WEBHOOK_URL, which tests (or you) listen on.
# KAFKA_SASL_SSL_PORT (the broker's SASL/SCRAM + TLS listener) defaults to KAFKA_PORT + 4
# (9096 by default), so stacks started with their own KAFKA_PORT do not collide on it;
# KAFKA_MTLS_PORT (TLS with a required client certificate) likewise defaults to KAFKA_PORT + 5.
declare -A STACK_PORT_DEFAULTS=(
  [KAFKA_PORT]=9092 [KAFKA_SASL_SSL_PORT]=+4 [KAFKA_MTLS_PORT]=+5 [KAFKA_CONTROLLER_PORT]=9093 [CONNECT_PORT]=8083 [FLINK_PORT]=8081
  [FLINK_RPC_PORT]=6123 [PROMETHEUS_PORT]=9090 [PROMETHEUS_SCRAPE_TARGETS]=127.0.0.1:9898
  [ALERTMANAGER_PORT]=9094 [ALERTMANAGER_WEBHOOK_URL]=http://127.0.0.1:9095/webhook
)

load_ports() {
  local k v f="$STACK_DIR/ports.env"
  declare -A saved=()
  if [[ -f $f ]]; then
    while IFS='=' read -r k v; do
      [[ -n $k && $k != \#* ]] && saved[$k]=$v
    done <"$f"
  fi
  for k in "${STACK_PORT_VARS[@]}"; do
    if [[ -z ${!k:-} ]]; then
      v=${saved[$k]:-${STACK_PORT_DEFAULTS[$k]}}
      [[ $k == KAFKA_SASL_SSL_PORT && $v == +4 ]] && v=$((KAFKA_PORT + 4))
      [[ $k == KAFKA_MTLS_PORT && $v == +5 ]] && v=$((KAFKA_PORT + 5))
      printf -v "$k" '%s' "$v"
    fi
    export "${k?}"
  done
  for k in KAFKA_PORT KAFKA_SASL_SSL_PORT KAFKA_MTLS_PORT KAFKA_CONTROLLER_PORT CONNECT_PORT FLINK_PORT FLINK_RPC_PORT PROMETHEUS_PORT ALERTMANAGER_PORT; do
    [[ ${!k} =~ ^[0-9]+$ ]] || die "$k must be a port number, got '${!k}'"
  done
  KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
  KAFKA_SASL_SSL_BOOTSTRAP="127.0.0.1:$KAFKA_SASL_SSL_PORT"
  KAFKA_MTLS_BOOTSTRAP="127.0.0.1:$KAFKA_MTLS_PORT"
  CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
  FLINK_URL="http://127.0.0.1:$FLINK_PORT"
  PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
  ALERTMANAGER_URL="http://127.0.0.1:$ALERTMANAGER_PORT"
}

save_ports() {
  local k f="$STACK_DIR/ports.env"
  {
    echo "# ports of the stack in this directory (written by stack/up; environment overrides)"
    for k in "${STACK_PORT_VARS[@]}"; do echo "$k=${!k}"; done
  } >"$f.tmp"
  mv -f "$f.tmp" "$f"
}

service_port() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;;
    connect) echo "$CONNECT_PORT" ;;
    flink) echo "$FLINK_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    alertmanager) echo "$ALERTMANAGER_PORT" ;;
  esac
}

load_ports

# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------
# Alive, not a zombie, and started for this $STACK_DIR (guards against pid reuse).
pid_is_ours() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z && $state != X ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STACK_DIR/"
}

pidfile() { echo "$STACK_DIR/$1/$1.pid"; }

# Prints the pids (one per line) of a service that are alive; non-zero if none.
service_pids() {
  local svc=$1 f pid found=1
  local files=()
  if [[ $svc == flink ]]; then
    shopt -s nullglob
    files=("$STACK_DIR"/flink/pid/*.pid)
    shopt -u nullglob
  else
    files=("$(pidfile "$svc")")
  fi
  for f in "${files[@]}"; do
    [[ -f $f ]] || continue
    while read -r pid; do
      if pid_is_ours "$pid"; then
        echo "$pid"
        found=0
      fi
    done <"$f"
  done
  return $found
}

service_running() { service_pids "$1" >/dev/null; }

# all processes of the service alive (Flink: JobManager and TaskManager)
service_alive() {
  if [[ $1 == flink ]]; then flink_alive; else service_running "$1"; fi
}

port_listening() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

port_owner() {
  if command -v ss >/dev/null 2>&1; then ss -Hltnp "sport = :$1" 2>/dev/null | head -3; fi
}

# Refuse to start a service whose port is held by a process that is not ours.
check_port_free() {
  local svc=$1 port=$2
  if port_listening "$port"; then
    die "$svc: port 127.0.0.1:$port is already in use by another process (not started from $STACK_DIR):
$(port_owner "$port")
stop it or choose another port (see stack/env for the variables)"
  fi
}

# Records the port a service was started on; `up` refuses to silently switch ports.
check_running_port() {
  local svc=$1 want=$2 have
  have=$(cat "$STACK_DIR/$svc/port" 2>/dev/null || true)
  if [[ -n $have && $have != "$want" ]]; then
    die "$svc is running on port $have, but port $want was requested; run 'stack/down $svc' first"
  fi
}

# spawn NAME LOGFILE CMD... : start CMD detached (own session), stdout+stderr to LOGFILE.
spawn() {
  local name=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$log")"
  [[ -f $log ]] && mv -f "$log" "$log.prev"
  # 8>&- 9>&-: do not hand the stack/cache lock descriptors to the service
  setsid nohup "$@" >"$log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$(pidfile "$name")"
}

# stop_pids NAME TIMEOUT PID... : SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pids() {
  local name=$1 timeout=$2 pid deadline left
  shift 2
  [[ $# -gt 0 ]] || return 0
  STOP_CLEAN=1
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + timeout))
  while :; do
    left=()
    for pid in "$@"; do pid_is_ours "$pid" && left+=("$pid"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    ((SECONDS < deadline)) || break
    sleep 0.2
  done
  STOP_CLEAN=0
  say "$name: still running after ${timeout}s, sending SIGKILL to ${left[*]}"
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    left=()
    for pid in "$@"; do pid_is_ours "$pid" && left+=("$pid"); done
    [[ ${#left[@]} -eq 0 ]] && return 0
    sleep 0.1
  done
  die "$name: could not kill ${left[*]}"
}

# wait_ready NAME : poll NAME_ready until it succeeds, the service's processes die, or
# $STACK_TIMEOUT passes. On failure print the tails of its logs (NAME_logs) and exit 1.
wait_ready() {
  local name=$1 deadline f why=""
  deadline=$((SECONDS + STACK_TIMEOUT))
  while ! "${name}_ready"; do
    if ! service_alive "$name"; then
      why="$name exited during startup"
    elif ((SECONDS >= deadline)); then
      why="$name not ready after ${STACK_TIMEOUT}s (STACK_TIMEOUT)"
    fi
    if [[ -n $why ]]; then
      say "error: $why"
      for f in $("${name}_logs"); do show_log_tail "$f"; done
      say "error: $why (logs in $STACK_DIR/$name)"
      exit 1
    fi
    sleep 0.3
  done
}

show_log_tail() {
  local f=$1
  [[ -f $f ]] || return 0
  echo "stack: ---- last 40 lines of $f ----" >&2
  tail -n 40 "$f" >&2
  echo "stack: ----" >&2
}

# Run a command with an exclusive lock on FILE (serialises concurrent downloads).
with_lock() {
  local lock=$1
  shift
  (
    flock -w 900 8 || die "timed out waiting for lock $lock"
    "$@"
  ) 8>"$lock"
}

# Serialise stack/up and stack/down on one run directory (held until the script exits).
lock_stack() {
  exec 9>"$STACK_DIR/.lock"
  if ! flock -n 9; then
    say "waiting for another stack/up or stack/down on $STACK_DIR"
    flock -w 900 9 || die "timed out waiting for the lock on $STACK_DIR"
  fi
}

http_get() { curl -fsS --max-time "${2:-5}" "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------
# OS prerequisites (stack/deps)
# ---------------------------------------------------------------------------------------
pkg_installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]; }

deps_missing() {
  local what=$1 p
  local want=()
  case $what in
    build) want+=(libsasl2-dev libssl-dev zlib1g-dev pkg-config build-essential curl) ;;
    kafka | connect)
      command -v java >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
      command -v mvn >/dev/null 2>&1 || want+=(maven)
      command -v curl >/dev/null 2>&1 || want+=(curl)
      ;;
    flink)
      { command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 && command -v jar >/dev/null 2>&1; } ||
        want+=(openjdk-17-jdk-headless)
      command -v curl >/dev/null 2>&1 || want+=(curl)
      command -v python3 >/dev/null 2>&1 || want+=(python3)
      if ! flink_python >/dev/null 2>&1; then want+=(python3-venv); fi
      ;;
    prometheus) [[ -x $PROMETHEUS_BIN && -x $PROMTOOL_BIN ]] || want+=(prometheus) ;;
    alertmanager) [[ -x $ALERTMANAGER_BIN ]] || want+=(prometheus-alertmanager) ;;
    *) die "deps: unknown group '$what'" ;;
  esac
  command -v flock >/dev/null 2>&1 || want+=(util-linux)
  command -v ss >/dev/null 2>&1 || want+=(iproute2)
  for p in "${want[@]}"; do
    [[ $p == prometheus || $p == python3-venv || $p == openjdk-* ]] && { echo "$p"; continue; }
    pkg_installed "$p" || echo "$p"
  done
}

ensure_deps() {
  local g p
  local missing=()
  for g in "$@"; do
    while read -r p; do [[ -n $p ]] && missing+=("$p"); done < <(deps_missing "$g")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  say "installing OS packages: ${missing[*]}"
  local log="$STACK_CACHE/apt.log" policy=/usr/sbin/policy-rc.d made_policy=""
  # Keep Debian's maintainer scripts from starting system services (e.g. a prometheus
  # on 0.0.0.0:9090): we run our own instances.
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
      { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  } >"$log" 2>&1 || rc=$?
  [[ -n $made_policy ]] && "${sudo[@]}" rm -f "$policy"
  if [[ $rc != 0 ]]; then
    show_log_tail "$log"
    die "apt-get install ${missing[*]} failed"
  fi
}

# ---------------------------------------------------------------------------------------
# AppCDS: class-data-sharing archives cut JVM start time (and CPU) of the services by
# roughly a third to a half. The first start of a service without an archive runs with
# -XX:ArchiveClassesAtExit; its clean stop writes the archive into the cache, and later
# starts map it (-XX:SharedArchiveFile). Keyed on the classpath and the JVM. STACK_CDS=0
# disables.
# ---------------------------------------------------------------------------------------
jvm_key() { readlink -f "$(command -v java)" | sha256sum | cut -c1-8; }

# The services run C1-only JITs: about half the CPU to start (Flink JM+TM ~14 -> ~7
# CPU-seconds, the broker ~4.5 -> ~2.5), which is what bounds start time on 2 busy cores;
# test workloads are small. STACK_FAST_JVM=0 restores the full JIT (e.g. for load tests).
fast_jvm_opts() {
  if [[ ${STACK_FAST_JVM:-1} == 1 ]]; then echo "-XX:TieredStopAtLevel=1"; fi
}

# cds_opts ROLE ARCHIVE_PREFIX : sets CDS_OPTS for a service role (kafka, connect,
# flink-jm, flink-tm) whose archive is ARCHIVE_PREFIX-ROLE-<jvm>.jsa.
cds_opts() {
  local role=$1 jsa tmp pending="$STACK_DIR/.cds-pending-$1"
  jsa="$2-$role-$(jvm_key).jsa"
  CDS_OPTS=()
  rm -f "$pending"
  [[ ${STACK_CDS:-1} == 1 ]] || return 0
  if [[ -s $jsa ]]; then
    CDS_OPTS=("-XX:SharedArchiveFile=$jsa")
  else
    tmp="$jsa.tmp.$$.$RANDOM"
    CDS_OPTS=("-XX:ArchiveClassesAtExit=$tmp")
    echo "$tmp $jsa" >"$pending"
  fi
}

# cds_promote ROLE CLEAN : after the service stopped; keep the archive only if it exited
# by itself (CLEAN=1), not by SIGKILL in the middle of writing it.
cds_promote() {
  local pending="$STACK_DIR/.cds-pending-$1" tmp jsa
  [[ -f $pending ]] || return 0
  read -r tmp jsa <"$pending" || true
  rm -f "$pending"
  [[ -n ${tmp:-} ]] || return 0
  if [[ $2 == 1 && -s $tmp ]]; then mv -f "$tmp" "$jsa"; else rm -f "$tmp"; fi
  return 0
}

# ---------------------------------------------------------------------------------------
# Kafka (broker + controller) and Kafka Connect: jars from Maven Central via stack/pom.xml
# ---------------------------------------------------------------------------------------
kafka_classpath_file() {
  echo "$STACK_CACHE/kafka-$KAFKA_VERSION-classpath-$(sha256sum "$STACK_HOME/pom.xml" | cut -c1-16).txt"
}

classpath_complete() {
  local f=$1 j
  [[ -s $f ]] || return 1
  local jars
  IFS=: read -r -a jars <"$f"
  [[ ${#jars[@]} -gt 10 ]] || return 1
  for j in "${jars[@]}"; do [[ -f $j ]] || return 1; done
}

_fetch_kafka_locked() {
  local cpf log
  cpf=$(kafka_classpath_file)
  classpath_complete "$cpf" && return 0
  log="$STACK_CACHE/mvn.log"
  say "kafka: resolving Kafka $KAFKA_VERSION jars with Maven (first run only, see $log)"
  if ! (cd "$STACK_CACHE" && mvn -q -B -Dstyle.color=never -f "$STACK_HOME/pom.xml" \
    dependency:build-classpath -Dmdep.includeScope=runtime -Dmdep.outputFile="$cpf.tmp") >"$log" 2>&1; then
    show_log_tail "$log"
    die "kafka: maven dependency resolution failed"
  fi
  mv -f "$cpf.tmp" "$cpf"
  classpath_complete "$cpf" || die "kafka: classpath $cpf is incomplete"
}

fetch_kafka() {
  classpath_complete "$(kafka_classpath_file)" && return 0
  with_lock "$STACK_CACHE/.lock-kafka" _fetch_kafka_locked
}

kafka_classpath() {
  local f
  f=$(kafka_classpath_file)
  classpath_complete "$f" || fetch_kafka
  cat "$f"
}

# JVM flags for short-lived CLI tools: fast start, small heap, quiet logging (JVM warnings
# to stderr, never stdout).
KAFKA_CLI_JAVA_OPTS=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto -Xss1m -Xmx256m
  -Xlog:disable -Xlog:all=warning:stderr -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$STACK_HOME/conf/log4j2-tools.xml")

# AppCDS archive of the classes a Kafka CLI loads: halves the tools' start time (~1.5 s ->
# ~0.7 s). Keyed on the classpath and the JVM; made by stack/up once the broker runs.
kafka_cds_prefix() { echo "$STACK_CACHE/$(basename "$(kafka_classpath_file)" .txt)"; }

kafka_cli_archive() { echo "$(kafka_cds_prefix)-cli-$(jvm_key).jsa"; }

kafka_cli_opts() {
  local jsa
  jsa=$(kafka_cli_archive)
  CLI_OPTS=("${KAFKA_CLI_JAVA_OPTS[@]}")
  [[ -s $jsa ]] && CLI_OPTS+=("-XX:SharedArchiveFile=$jsa")
  return 0
}

_build_kafka_cli_archive_locked() {
  local jsa tmp cp
  jsa=$(kafka_cli_archive)
  [[ -s $jsa ]] && return 0
  tmp="$jsa.tmp.$$"
  cp=$(kafka_classpath)
  # Train on the heaviest common tool run: describing every group.
  timeout 60 java "${KAFKA_CLI_JAVA_OPTS[@]}" "-XX:ArchiveClassesAtExit=$tmp" -cp "$cp" \
    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --describe --all-groups >/dev/null 2>&1 || true
  if [[ -s $tmp ]]; then mv -f "$tmp" "$jsa"; else rm -f "$tmp"; fi
  return 0
}

build_kafka_cli_archive() {
  [[ -s $(kafka_cli_archive) ]] && return 0
  with_lock "$STACK_CACHE/.lock-kafka" _build_kafka_cli_archive_locked
}

STACK_BACKGROUND=()
# wait for background helpers started by `up` (never leave them behind)
finish_background() {
  local p
  for p in "${STACK_BACKGROUND[@]}"; do wait "$p" || true; done
  STACK_BACKGROUND=()
}

kafka_run_class() {
  local cp
  cp=$(kafka_classpath)
  kafka_cli_opts
  # shellcheck disable=SC2086
  exec java "${CLI_OPTS[@]}" ${KAFKA_CLI_EXTRA_OPTS:-} -cp "$cp" "$@"
}

KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_READY_LINE="Kafka Server started"

write_kafka_config() {
  mkdir -p "$KAFKA_DIR/data"
  # Tests only: KAFKA_PROXY_PORT adds a plaintext listener that advertises itself as
  # 127.0.0.1:KAFKA_PROXY_ADVERTISED_PORT, where a test's fault-injecting proxy forwards to
  # it; clients bootstrapped at the proxy then reach the broker only through the proxy.
  local proxy_listener= proxy_advertised= proxy_map=
  if [[ -n ${KAFKA_PROXY_PORT:-} ]]; then
    proxy_listener=",PROXY://127.0.0.1:$KAFKA_PROXY_PORT"
    proxy_advertised=",PROXY://127.0.0.1:${KAFKA_PROXY_ADVERTISED_PORT:?KAFKA_PROXY_PORT needs KAFKA_PROXY_ADVERTISED_PORT}"
    proxy_map=",PROXY:PLAINTEXT"
  fi
  cat >"$KAFKA_DIR/server.properties.tmp" <<EOF
# generated by stack/lib.sh -- edits are overwritten by stack/up
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT$proxy_listener
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT$proxy_advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL$proxy_map
# SASL over TLS for clients: SCRAM (users: see kafka_scram_users), PLAIN (the same user
# and password) and OAUTHBEARER with Kafka's unsecured-JWS validator (its default when no
# server callback handler is set: any unsigned token with a sub and an unexpired exp);
# the certificate is signed by the stack's own CA ($KAFKA_DIR/tls/ca.crt)
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USERNAME="$(kafka_sasl_password)";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
# TLS with a required client certificate (mutual TLS): the client's certificate
# ($KAFKA_DIR/tls/client.crt) is signed by the same CA, which the broker trusts
listener.name.mtls.ssl.keystore.type=PKCS12
listener.name.mtls.ssl.keystore.location=$KAFKA_TLS_DIR/broker.p12
listener.name.mtls.ssl.keystore.password=$(cat "$KAFKA_TLS_DIR/keystore-password")
listener.name.mtls.ssl.key.password=$(cat "$KAFKA_TLS_DIR/keystore-password")
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$KAFKA_TLS_DIR/ca.crt
listener.name.mtls.ssl.client.auth=required
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$KAFKA_TLS_DIR/keystore-password")
listener.name.sasl_ssl.ssl.key.password=$(cat "$KAFKA_TLS_DIR/keystore-password")
listener.name.sasl_ssl.ssl.client.auth=none
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.coordinator.rebalance.protocols=classic,consumer
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
  mv -f "$KAFKA_DIR/server.properties.tmp" "$KAFKA_DIR/server.properties"
}

kafka_logs() { echo "$KAFKA_LOG"; }

kafka_ready() {
  port_listening "$KAFKA_PORT" && port_listening "$KAFKA_SASL_SSL_PORT" && port_listening "$KAFKA_MTLS_PORT" && grep -qF "$KAFKA_READY_LINE" "$KAFKA_LOG" 2>/dev/null
}

# ---- SASL/SCRAM + TLS listener ---------------------------------------------------------
# A self-signed CA and a broker certificate (SAN IP:127.0.0.1, DNS:localhost), made once
# with openssl and cached in $KAFKA_TLS_DIR; one user, KAFKA_SASL_USERNAME, with
# SCRAM-SHA-512 and SCRAM-SHA-256 credentials and a random password kept in
# $KAFKA_DIR/sasl-password. KRaft keeps SCRAM credentials in the metadata log: a fresh
# storage gets them at format time (--add-scram); a storage formatted before this listener
# existed gets them from kafka-configs once the broker is up (marker file scram-users).
KAFKA_TLS_DIR="$KAFKA_DIR/tls"
KAFKA_SASL_USERNAME=streamguard
KAFKA_SCRAM_MARKER="$KAFKA_DIR/scram-users"

random_secret() { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'; }

kafka_sasl_password() {
  if [[ ! -s $KAFKA_DIR/sasl-password ]]; then
    mkdir -p "$KAFKA_DIR"
    (umask 077 && random_secret >"$KAFKA_DIR/sasl-password.tmp")
    mv -f "$KAFKA_DIR/sasl-password.tmp" "$KAFKA_DIR/sasl-password"
  fi
  tr -d '[:space:]' <"$KAFKA_DIR/sasl-password"
}

ensure_kafka_tls() {
  local d=$KAFKA_TLS_DIR log
  [[ -s $d/ca.crt && -s $d/broker.p12 && -s $d/keystore-password ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "kafka: openssl is needed to make the SASL_SSL listener's certificates"
  rm -rf "$d.tmp"
  mkdir -p "$d.tmp"
  log="$d.tmp/openssl.log"
  say "kafka: making a self-signed CA and broker certificate in $d"
  (umask 077 && random_secret >"$d.tmp/keystore-password")
  if ! (
    cd "$d.tmp" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=streamguard stack CA" \
        -keyout ca.key -out ca.crt &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext &&
      openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile broker.ext -out broker.crt &&
      openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
        -passout "file:keystore-password" -out broker.p12
  ) >"$log" 2>&1; then
    show_log_tail "$log"
    die "kafka: making the TLS certificates failed"
  fi
  rm -rf "$d"
  mv -f "$d.tmp" "$d"
}

# A client certificate (CN=streamguard, clientAuth) signed by the stack's CA, for the
# MTLS listener; made once, also in a TLS directory made before that listener existed.
ensure_kafka_client_cert() {
  local d=$KAFKA_TLS_DIR log
  [[ -s $d/client.crt && -s $d/client.key ]] && return 0
  log="$d/openssl-client.log"
  say "kafka: making a client certificate for the mutual-TLS listener in $d"
  if ! (
    cd "$d" &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$KAFKA_SASL_USERNAME" -keyout client.key.tmp -out client.csr &&
      printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile client.ext -out client.crt.tmp &&
      chmod 600 client.key.tmp && mv -f client.key.tmp client.key && mv -f client.crt.tmp client.crt
  ) >"$log" 2>&1; then
    show_log_tail "$log"
    die "kafka: making the client certificate failed"
  fi
}

# the --add-scram arguments of kafka-storage format, one credential per mechanism
kafka_scram_format_args() {
  local pw m
  pw=$(kafka_sasl_password)
  for m in SCRAM-SHA-512 SCRAM-SHA-256; do
    printf '%s\n' --add-scram "$m=[name=$KAFKA_SASL_USERNAME,password=$pw]"
  done
}

# After the broker is ready: a storage formatted before the SASL_SSL listener existed has
# no SCRAM users yet; add them over the PLAINTEXT listener (idempotent).
ensure_kafka_scram_users() {
  [[ -f $KAFKA_SCRAM_MARKER ]] && return 0
  local cp pw m
  cp=$(kafka_classpath)
  kafka_cli_opts
  pw=$(kafka_sasl_password)
  say "kafka: storage predates the SASL_SSL listener; adding SCRAM users with kafka-configs"
  : >"$KAFKA_DIR/scram.log"
  # one mechanism per request (the broker refuses two changes of one user in a request)
  for m in SCRAM-SHA-512 SCRAM-SHA-256; do
    if ! java "${CLI_OPTS[@]}" -cp "$cp" kafka.admin.ConfigCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --alter --entity-type users --entity-name "$KAFKA_SASL_USERNAME" \
      --add-config "$m=[password=$pw]" >>"$KAFKA_DIR/scram.log" 2>&1; then
      show_log_tail "$KAFKA_DIR/scram.log"
      die "kafka: adding SCRAM users failed"
    fi
  done
  echo "$KAFKA_SASL_USERNAME" >"$KAFKA_SCRAM_MARKER"
}

format_kafka_storage() {
  local id
  if [[ -f $KAFKA_DIR/data/meta.properties ]]; then
    local have
    have=$(cat "$KAFKA_DIR/controller-port" 2>/dev/null || echo "$KAFKA_CONTROLLER_PORT")
    [[ $have == "$KAFKA_CONTROLLER_PORT" ]] ||
      die "kafka: storage in $KAFKA_DIR/data was formatted with controller port $have (now $KAFKA_CONTROLLER_PORT); use that port or remove $KAFKA_DIR"
    return 0
  fi
  local cp
  cp=$(kafka_classpath)
  kafka_cli_opts
  if [[ ! -s $KAFKA_DIR/cluster-id ]]; then
    # what `kafka.tools.StorageTool random-uuid` prints (Uuid.randomUuid: 16 random bytes,
    # URL-safe base64 without padding, never starting with '-'), without starting a JVM
    id=-
    while [[ $id == -* ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    echo "$id" >"$KAFKA_DIR/cluster-id"
  fi
  id=$(tr -d '[:space:]' <"$KAFKA_DIR/cluster-id")
  say "kafka: formatting storage (cluster id $id)"
  local scram
  mapfile -t scram < <(kafka_scram_format_args)
  if ! java "${CLI_OPTS[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone \
    -t "$id" -c "$KAFKA_DIR/server.properties" "${scram[@]}" >"$KAFKA_DIR/format.log" 2>&1; then
    show_log_tail "$KAFKA_DIR/format.log"
    die "kafka: storage format failed"
  fi
  echo "$KAFKA_SASL_USERNAME" >"$KAFKA_SCRAM_MARKER"
  echo "$KAFKA_CONTROLLER_PORT" >"$KAFKA_DIR/controller-port"
}

# start_kafka: returns 0 once launched (or already running); wait with wait_kafka.
start_kafka() {
  if service_running kafka; then
    check_running_port kafka "$KAFKA_PORT"
    if grep -qF "SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT" "$KAFKA_DIR/server.properties" 2>/dev/null &&
      grep -qF "MTLS://127.0.0.1:$KAFKA_MTLS_PORT" "$KAFKA_DIR/server.properties" 2>/dev/null &&
      grep -qF "OAUTHBEARER" "$KAFKA_DIR/server.properties" 2>/dev/null; then
      return 0
    fi
    # started by a stack/ from before the SASL_SSL or MTLS listener (or with other ports)
    say "kafka: running without the SASL_SSL listener on $KAFKA_SASL_SSL_PORT (PLAIN, OAUTHBEARER) or the MTLS listener on $KAFKA_MTLS_PORT; restarting it with those"
    stop_service kafka
  fi
  check_port_free kafka "$KAFKA_PORT"
  check_port_free kafka "$KAFKA_SASL_SSL_PORT"
  check_port_free kafka "$KAFKA_MTLS_PORT"
  check_port_free kafka "$KAFKA_CONTROLLER_PORT"
  fetch_kafka
  ensure_kafka_tls
  ensure_kafka_client_cert
  kafka_sasl_password >/dev/null
  write_kafka_config
  format_kafka_storage
  local cp
  cp=$(kafka_classpath)
  say "kafka: starting broker+controller on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
  echo "$KAFKA_PORT" >"$KAFKA_DIR/port"
  cds_opts kafka "$(kafka_cds_prefix)"
  # shellcheck disable=SC2086,SC2046
  spawn kafka "$KAFKA_LOG" java -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "${CDS_OPTS[@]}" $(fast_jvm_opts) \
    "-Dlog4j2.configurationFile=$STACK_HOME/conf/log4j2-server.xml" ${KAFKA_EXTRA_JAVA_OPTS:-} \
    -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties"
}

wait_kafka() {
  wait_ready kafka
  ensure_kafka_scram_users
  say "kafka: up at $KAFKA_BOOTSTRAP (SASL_SSL with SCRAM, PLAIN and OAUTHBEARER at $KAFKA_SASL_SSL_BOOTSTRAP, mutual TLS at $KAFKA_MTLS_BOOTSTRAP)"
  # first run only: the CLI's class-data archive, trained against the running broker, in
  # the background (collected by finish_background)
  if [[ ! -s $(kafka_cli_archive) && ${STACK_CDS:-1} == 1 ]]; then
    build_kafka_cli_archive </dev/null >/dev/null 2>&1 9>&- &
    STACK_BACKGROUND+=($!)
  fi
}

CONNECT_DIR="$STACK_DIR/connect"
CONNECT_LOG="$CONNECT_DIR/connect.log"

write_connect_config() {
  mkdir -p "$CONNECT_DIR"
  cat >"$CONNECT_DIR/worker.properties.tmp" <<EOF
# generated by stack/lib.sh -- edits are overwritten by stack/up
bootstrap.servers=127.0.0.1:$KAFKA_PORT
group.id=streamguard-connect
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=streamguard-connect-configs
offset.storage.topic=streamguard-connect-offsets
status.storage.topic=streamguard-connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=1
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$CONNECT_PORT
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$CONNECT_PORT
rest.advertised.listener=http
# single worker: reassign a restarted worker's connectors at once, not after 5 minutes
scheduled.rebalance.max.delay.ms=0
connector.client.config.override.policy=All
# connect-file / connect-json are on the worker classpath (no plugin.path needed) and carry
# ServiceLoader manifests, so skip the slow reflective classpath scan
plugin.discovery=service_load
EOF
  mv -f "$CONNECT_DIR/worker.properties.tmp" "$CONNECT_DIR/worker.properties"
}

connect_logs() { echo "$CONNECT_LOG"; }

connect_ready() {
  local body
  body=$(http_get "$CONNECT_URL/connector-plugins") || return 1
  [[ $body == *FileStreamSinkConnector* ]]
}

start_connect() {
  if service_running connect; then
    check_running_port connect "$CONNECT_PORT"
    return 0
  fi
  check_port_free connect "$CONNECT_PORT"
  fetch_kafka
  write_connect_config
  local cp
  cp=$(kafka_classpath)
  say "kafka connect: starting distributed worker, REST on $CONNECT_URL"
  echo "$CONNECT_PORT" >"$CONNECT_DIR/port"
  cds_opts connect "$(kafka_cds_prefix)"
  # shellcheck disable=SC2086,SC2046
  spawn connect "$CONNECT_LOG" java -Xms256m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError "${CDS_OPTS[@]}" $(fast_jvm_opts) \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$STACK_HOME/conf/log4j2-server.xml" \
    ${CONNECT_EXTRA_JAVA_OPTS:-} -cp "$cp" org.apache.kafka.connect.cli.ConnectDistributed \
    "$CONNECT_DIR/worker.properties"
}

wait_connect() {
  wait_ready connect
  say "kafka connect: up at $CONNECT_URL"
}

# ---------------------------------------------------------------------------------------
# Flink: the PyPI apache-flink + apache-flink-libraries wheels form a full distribution
# ---------------------------------------------------------------------------------------
FLINK_DIR="$STACK_DIR/flink"
: "${FLINK_VENV:=$STACK_CACHE/flink-$FLINK_VERSION-venv}"
export FLINK_CONF_DIR="$FLINK_DIR/conf"
export FLINK_LOG_DIR="$FLINK_DIR/log"
export FLINK_PID_DIR="$FLINK_DIR/pid"
export FLINK_IDENT_STRING=streamguard # names the log and pid files (default: $USER)

# A python3 that can create virtualenvs (prefers an explicit $STACK_PYTHON).
flink_python() {
  local py
  for py in ${STACK_PYTHON:-} python3 /usr/bin/python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 && { command -v "$py"; return 0; }
  done
  return 1
}

flink_home_cached() {
  local h
  [[ -f $FLINK_VENV/.streamguard-ok ]] || return 1
  h=$(cat "$FLINK_VENV/.streamguard-ok")
  [[ -x $h/bin/start-cluster.sh && -f $h/lib/flink-dist-$FLINK_VERSION.jar ]] || return 1
  echo "$h"
}

_fetch_flink_locked() {
  flink_home_cached >/dev/null && return 0
  local py log="$STACK_CACHE/pip-flink.log" h
  py=$(flink_python) || die "flink: no python3 with venv support (apt-get install python3-venv)"
  say "flink: installing apache-flink $FLINK_VERSION from PyPI into $FLINK_VENV (first run only, ~350 MB)"
  rm -rf "$FLINK_VENV"
  if ! { "$py" -m venv "$FLINK_VENV" &&
    "$FLINK_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"; } >"$log" 2>&1; then
    show_log_tail "$log"
    die "flink: pip install failed"
  fi
  h=$(find "$FLINK_VENV"/lib -maxdepth 3 -type d -path '*/site-packages/pyflink' 2>/dev/null | head -1)
  [[ -n $h && -f $h/bin/start-cluster.sh ]] || die "flink: pyflink distribution not found in $FLINK_VENV"
  chmod +x "$h"/bin/*.sh "$h/bin/flink" 2>/dev/null || true
  echo "$h" >"$FLINK_VENV/.streamguard-ok"
}

fetch_flink() {
  flink_home_cached >/dev/null || with_lock "$STACK_CACHE/.lock-flink" _fetch_flink_locked
  FLINK_HOME=$(flink_home_cached) || die "flink: installation in $FLINK_VENV is incomplete"
  export FLINK_HOME
}

# Flink's bin/ scripts run several short JVMs (BashJavaUtils: parse config.yaml, compute
# memory sizes) before each daemon starts, ~1-2 s each on a busy 2-core machine. They find
# java as $JAVA_HOME/bin/java, so point JAVA_HOME at a wrapper that gives those runs a
# fast-start JVM (C1 only, serial GC, class-data archive) and execs the real java unchanged
# for everything else (the JobManager/TaskManager keep their pid).
write_flink_java_wrapper() {
  local real jvmdir="$FLINK_DIR/jvm" jsa
  real=$(readlink -f "$(command -v java)")
  jsa="$STACK_CACHE/flink-$FLINK_VERSION-bashjavautils-$(jvm_key).jsa"
  mkdir -p "$jvmdir/bin"
  cat >"$jvmdir/bin/java.tmp" <<EOF
#!/usr/bin/env bash
# generated by stack/lib.sh: java for Flink's bin/ scripts (see write_flink_java_wrapper)
for a in "\$@"; do
  if [[ \$a == org.apache.flink.runtime.util.bash.BashJavaUtils ]]; then
    fast=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xlog:disable)
    if [[ -s '$jsa' ]]; then
      fast+=('-XX:SharedArchiveFile=$jsa')
    elif [[ '${STACK_CDS:-1}' == 1 ]]; then
      tmp='$jsa'.tmp.\$\$
      '$real' "\${fast[@]}" "-XX:ArchiveClassesAtExit=\$tmp" "\$@" && rc=0 || rc=\$?
      if [[ \$rc == 0 && -s \$tmp ]]; then mv -f "\$tmp" '$jsa'; else rm -f "\$tmp"; fi
      exit \$rc
    fi
    exec '$real' "\${fast[@]}" "\$@"
  fi
done
exec '$real' "\$@"
EOF
  chmod +x "$jvmdir/bin/java.tmp"
  mv -f "$jvmdir/bin/java.tmp" "$jvmdir/bin/java"
  export JAVA_HOME="$jvmdir"
}

write_flink_config() {
  local javaopts
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$FLINK_DIR/tmp" "$FLINK_DIR/upload" \
    "$FLINK_DIR/checkpoints" "$FLINK_DIR/savepoints"
  write_flink_java_wrapper
  # log4j files, masters, workers ... from the distribution; config.yaml is ours
  cp -f "$FLINK_HOME"/conf/* "$FLINK_CONF_DIR/"
  # Flink 2.x reads conf/config.yaml (flink-conf.yaml is gone). Keep the distribution's JVM
  # --add-opens list, replace everything else.
  javaopts=$(sed -n 's/^ *all: *\(--add-.*\)$/\1/p' "$FLINK_HOME/conf/config.yaml" | head -1)
  local cds="" prefix="$STACK_CACHE/flink-$FLINK_VERSION" extra
  extra="$(fast_jvm_opts) ${FLINK_EXTRA_JAVA_OPTS:-}"
  cds_opts flink-jm "$prefix"
  cds+="env.java.opts.jobmanager: ${CDS_OPTS[*]} $extra"$'\n'
  cds_opts flink-tm "$prefix"
  cds+="env.java.opts.taskmanager: ${CDS_OPTS[*]} $extra"$'\n'
  echo "127.0.0.1:$FLINK_PORT" >"$FLINK_CONF_DIR/masters"
  echo "127.0.0.1" >"$FLINK_CONF_DIR/workers"
  cat >"$FLINK_CONF_DIR/config.yaml" <<EOF
# generated by stack/lib.sh -- edits are overwritten by stack/up
env.java.opts.all: $javaopts
${cds}env.pid.dir: $FLINK_PID_DIR
env.log.dir: $FLINK_LOG_DIR
jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $FLINK_RPC_PORT
jobmanager.memory.process.size: 800m
jobmanager.execution.failover-strategy: region
taskmanager.bind-host: 127.0.0.1
taskmanager.host: 127.0.0.1
taskmanager.numberOfTaskSlots: 2
taskmanager.memory.process.size: 1200m
parallelism.default: 1
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $FLINK_PORT
io.tmp.dirs: $FLINK_DIR/tmp
web.tmpdir: $FLINK_DIR/tmp
web.upload.dir: $FLINK_DIR/upload
# fresher GET /jobs/{id}/checkpoints (default: web.refresh-interval, 3 s)
rest.cache.checkpoint-statistics.timeout: 1s
execution.checkpointing.dir: file://$FLINK_DIR/checkpoints
execution.checkpointing.savepoint-dir: file://$FLINK_DIR/savepoints
EOF
}

# flink_role_pids standalonesession|taskexecutor : alive pids of that daemon
flink_role_pids() {
  local f="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-$1.pid" pid found=1
  [[ -f $f ]] || return 1
  while read -r pid; do
    if pid_is_ours "$pid"; then
      echo "$pid"
      found=0
    fi
  done <"$f"
  return $found
}

# both the JobManager and a TaskManager process are alive
flink_alive() { flink_role_pids standalonesession >/dev/null && flink_role_pids taskexecutor >/dev/null; }

flink_ready() {
  local body
  flink_alive || return 1
  body=$(http_get "$FLINK_URL/overview") || return 1
  [[ $body =~ \"taskmanagers\":[1-9] ]]
}

flink_logs() { ls "$FLINK_LOG_DIR"/*.log "$FLINK_LOG_DIR"/*.out "$FLINK_DIR/start-cluster.log" 2>/dev/null || true; }

start_flink() {
  fetch_flink
  if service_running flink; then
    check_running_port flink "$FLINK_PORT"
    flink_alive && return 0 # up, or starting (wait_flink checks)
    if flink_role_pids standalonesession >/dev/null; then
      # the TaskManager died: start a new one (it registers with the running JobManager)
      say "flink: TaskManager not running, starting one"
      flink_role_pids taskexecutor >"$FLINK_PID_DIR/tm.tmp" || true
      mv -f "$FLINK_PID_DIR/tm.tmp" "$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid"
      write_flink_java_wrapper
      setsid bash "$FLINK_HOME/bin/taskmanager.sh" start >"$FLINK_DIR/start-cluster.log" 2>&1 </dev/null 8>&- 9>&- &
      FLINK_LAUNCHER=$!
      return 0
    fi
    say "flink: JobManager not running, restarting the cluster"
    stop_flink
  fi
  check_port_free flink "$FLINK_PORT"
  check_port_free flink "$FLINK_RPC_PORT"
  write_flink_config
  rm -f "$FLINK_PID_DIR"/*.pid
  say "flink: starting standalone cluster (JobManager + TaskManager), REST on $FLINK_URL"
  echo "$FLINK_PORT" >"$FLINK_DIR/port"
  # What bin/start-cluster.sh does for a local, non-HA cluster (jobmanager.sh start, then
  # taskmanager.sh start per line of conf/workers), but both at once and in the background:
  # each script runs several short JVMs (BashJavaUtils) before the daemon starts, so this
  # overlaps with the other services' startup. wait_flink collects it.
  # shellcheck disable=SC2016
  setsid bash -c 'bash "$1/bin/jobmanager.sh" start & bash "$1/bin/taskmanager.sh" start & wait -n && wait -n' \
    flink-launch "$FLINK_HOME" >"$FLINK_DIR/start-cluster.log" 2>&1 </dev/null 8>&- 9>&- &
  FLINK_LAUNCHER=$!
}

wait_flink() {
  if [[ -n ${FLINK_LAUNCHER:-} ]]; then
    if ! wait "$FLINK_LAUNCHER"; then
      show_log_tail "$FLINK_DIR/start-cluster.log"
      die "flink: starting the JobManager/TaskManager failed"
    fi
    FLINK_LAUNCHER=""
  fi
  wait_ready flink
  say "flink: up at $FLINK_URL"
}

# Equivalent of bin/stop-cluster.sh (SIGTERM to the daemons in the pid files), but with a
# longer grace period than its 10 s before SIGKILL.
stop_flink() {
  local pids
  STOP_CLEAN=1
  mapfile -t pids < <(service_pids flink || true)
  if [[ ${#pids[@]} -gt 0 ]]; then
    say "flink: stopping (pid ${pids[*]})"
    stop_pids flink 30 "${pids[@]}"
  fi
  cds_promote flink-jm "$STOP_CLEAN"
  cds_promote flink-tm "$STOP_CLEAN"
  rm -f "$FLINK_PID_DIR"/*.pid "$FLINK_DIR/port"
}

FLINK_JOB_SRC="$STACK_HOME/flink-job/CheckpointingJob.java"
FLINK_JOB_CLASS=CheckpointingJob

flink_job_jar() {
  echo "$FLINK_DIR/job/checkpointing-job-$FLINK_VERSION-$(sha256sum "$FLINK_JOB_SRC" | cut -c1-12).jar"
}

build_flink_job() {
  fetch_flink
  local jar build
  jar=$(flink_job_jar)
  [[ -s $jar ]] && return 0
  build="$FLINK_DIR/job/build.$$"
  rm -rf "$build"
  mkdir -p "$build/classes"
  if ! javac -nowarn -d "$build/classes" -cp "$FLINK_HOME/lib/*" "$FLINK_JOB_SRC" >"$FLINK_DIR/job/javac.log" 2>&1; then
    show_log_tail "$FLINK_DIR/job/javac.log"
    rm -rf "$build"
    die "flink: compiling $FLINK_JOB_SRC failed"
  fi
  jar cfe "$build/job.jar" "$FLINK_JOB_CLASS" -C "$build/classes" .
  mv -f "$build/job.jar" "$jar"
  rm -rf "$build"
}

# ---------------------------------------------------------------------------------------
# Prometheus (Debian package binary, our own config and storage)
# ---------------------------------------------------------------------------------------
PROM_DIR="$STACK_DIR/prometheus"
PROM_LOG="$PROM_DIR/prometheus.log"

write_prometheus_config() {
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/rules"
  local targets t x
  targets=""
  IFS=, read -r -a t <<<"$PROMETHEUS_SCRAPE_TARGETS"
  for x in "${t[@]}"; do targets+="${targets:+, }'${x// /}'"; done
  cat >"$PROM_DIR/prometheus.yml.tmp" <<EOF
# generated by stack/lib.sh -- edits are overwritten by stack/up
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
# drop rule files here, then: curl -X POST $PROMETHEUS_URL/-/reload
rule_files:
  - $PROM_DIR/rules/*.yml
  - $PROM_DIR/rules/*.yaml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:$PROMETHEUS_PORT']
  - job_name: streamguard
    metrics_path: /metrics
    static_configs:
      - targets: [$targets]
EOF
  if [[ -x $PROMTOOL_BIN ]] && ! "$PROMTOOL_BIN" check config "$PROM_DIR/prometheus.yml.tmp" >"$PROM_DIR/promtool.log" 2>&1; then
    show_log_tail "$PROM_DIR/promtool.log"
    die "prometheus: generated config is invalid"
  fi
  if cmp -s "$PROM_DIR/prometheus.yml.tmp" "$PROM_DIR/prometheus.yml"; then
    rm -f "$PROM_DIR/prometheus.yml.tmp"
    return 1 # unchanged
  fi
  mv -f "$PROM_DIR/prometheus.yml.tmp" "$PROM_DIR/prometheus.yml"
  return 0
}

prometheus_logs() { echo "$PROM_LOG"; }

prometheus_ready() { http_get "$PROMETHEUS_URL/-/ready" >/dev/null; }

start_prometheus() {
  [[ -x $PROMETHEUS_BIN ]] || ensure_deps prometheus
  if service_running prometheus; then
    check_running_port prometheus "$PROMETHEUS_PORT"
    if write_prometheus_config && prometheus_ready; then
      say "prometheus: config changed, reloading"
      curl -fsS -X POST "$PROMETHEUS_URL/-/reload" >/dev/null || say "prometheus: reload failed"
    fi
    return 0
  fi
  check_port_free prometheus "$PROMETHEUS_PORT"
  write_prometheus_config || true
  say "prometheus: starting on $PROMETHEUS_URL, scraping $PROMETHEUS_SCRAPE_TARGETS"
  echo "$PROMETHEUS_PORT" >"$PROM_DIR/port"
  spawn prometheus "$PROM_LOG" "$PROMETHEUS_BIN" \
    "--config.file=$PROM_DIR/prometheus.yml" \
    "--storage.tsdb.path=$PROM_DIR/data" \
    "--web.listen-address=127.0.0.1:$PROMETHEUS_PORT" \
    --web.enable-lifecycle \
    --storage.tsdb.retention.time=2d
}

wait_prometheus() {
  wait_ready prometheus
  say "prometheus: up at $PROMETHEUS_URL"
}

# ---------------------------------------------------------------------------------------
# Alertmanager (Debian package binary, our own config and storage, clustering off)
# ---------------------------------------------------------------------------------------
AM_DIR="$STACK_DIR/alertmanager"
AM_LOG="$AM_DIR/alertmanager.log"

# One route, one webhook receiver. Every label set is its own group (group_by '...') and
# notifications go out within a second, so tests see each alert and its resolve quickly.
write_alertmanager_config() {
  mkdir -p "$AM_DIR/data"
  cat >"$AM_DIR/alertmanager.yml.tmp" <<EOF
# generated by stack/lib.sh -- edits are overwritten by stack/up
route:
  receiver: webhook
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: '$ALERTMANAGER_WEBHOOK_URL'
        send_resolved: true
EOF
  if [[ -x $AMTOOL_BIN ]] && ! "$AMTOOL_BIN" check-config "$AM_DIR/alertmanager.yml.tmp" >"$AM_DIR/amtool.log" 2>&1; then
    show_log_tail "$AM_DIR/amtool.log"
    die "alertmanager: generated config is invalid"
  fi
  if cmp -s "$AM_DIR/alertmanager.yml.tmp" "$AM_DIR/alertmanager.yml"; then
    rm -f "$AM_DIR/alertmanager.yml.tmp"
    return 1 # unchanged
  fi
  mv -f "$AM_DIR/alertmanager.yml.tmp" "$AM_DIR/alertmanager.yml"
  return 0
}

alertmanager_logs() { echo "$AM_LOG"; }

alertmanager_ready() { http_get "$ALERTMANAGER_URL/-/ready" >/dev/null; }

start_alertmanager() {
  [[ -x $ALERTMANAGER_BIN ]] || ensure_deps alertmanager
  if service_running alertmanager; then
    check_running_port alertmanager "$ALERTMANAGER_PORT"
    if write_alertmanager_config && alertmanager_ready; then
      say "alertmanager: config changed, reloading"
      curl -fsS -X POST "$ALERTMANAGER_URL/-/reload" >/dev/null || say "alertmanager: reload failed"
    fi
    return 0
  fi
  check_port_free alertmanager "$ALERTMANAGER_PORT"
  write_alertmanager_config || true
  say "alertmanager: starting on $ALERTMANAGER_URL, webhook receiver $ALERTMANAGER_WEBHOOK_URL"
  echo "$ALERTMANAGER_PORT" >"$AM_DIR/port"
  # --cluster.listen-address= turns gossip off (it would bind 0.0.0.0:9094 otherwise).
  spawn alertmanager "$AM_LOG" "$ALERTMANAGER_BIN" \
    "--config.file=$AM_DIR/alertmanager.yml" \
    "--storage.path=$AM_DIR/data" \
    "--web.listen-address=127.0.0.1:$ALERTMANAGER_PORT" \
    "--web.external-url=$ALERTMANAGER_URL" \
    --cluster.listen-address= \
    --data.retention=24h
}

wait_alertmanager() {
  wait_ready alertmanager
  say "alertmanager: up at $ALERTMANAGER_URL"
}

# ---------------------------------------------------------------------------------------
stop_service() {
  local svc=$1 pids timeout=30
  if [[ $svc == flink ]]; then
    stop_flink
    return 0
  fi
  STOP_CLEAN=1
  mapfile -t pids < <(service_pids "$svc" || true)
  if [[ ${#pids[@]} -gt 0 ]]; then
    say "$svc: stopping (pid ${pids[*]})"
    stop_pids "$svc" "$timeout" "${pids[@]}"
  fi
  cds_promote "$svc" "$STOP_CLEAN"
  rm -f "$(pidfile "$svc")" "$STACK_DIR/$svc/port"
}

service_ready() {
  case $1 in
    kafka) kafka_ready ;;
    connect) connect_ready ;;
    flink) flink_ready ;;
    prometheus) prometheus_ready ;;
    alertmanager) alertmanager_ready ;;
  esac
}

# expand_services ARG... : sets SERVICES to the named services in stack order
# (no arguments or "all" = every service).
expand_services() {
  local s wanted=" "
  [[ $# -eq 0 ]] && set -- all
  for s in "$@"; do
    case $s in
      all) wanted+="${STACK_SERVICES[*]} " ;;
      kafka | connect | flink | prometheus | alertmanager) wanted+="$s " ;;
      -h | --help) return 2 ;;
      *) die "unknown service '$s' (expected: kafka, connect, flink, prometheus, alertmanager or all)" ;;
    esac
  done
  SERVICES=()
  for s in "${STACK_SERVICES[@]}"; do
    [[ $wanted == *" $s "* ]] && SERVICES+=("$s")
  done
  return 0
}
