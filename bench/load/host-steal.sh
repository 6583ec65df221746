# Sourced by the load scripts: the host's steal (CPU time the hypervisor gave to other
# guests) over a measured run. A run with a few percent of it has its p99 set by the host,
# not by the servers.
# cpu_times: the machine's CPU times from /proc/stat ("cpu" line: user nice system idle
# iowait irq softirq steal).
cpu_times() { awk '$1 == "cpu" {print $2, $3, $4, $5, $6, $7, $8, $9; exit}' /proc/stat; }
# steal_pct BEFORE AFTER (two cpu_times outputs): steal's share of the time in between, in %.
steal_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x); split(b, y); t = 0
    for (i = 1; i <= 8; i++) t += y[i] - x[i]
    printf "%.1f", (t > 0 ? (y[8] - x[8]) * 100 / t : 0) }'
}
