// every runs fn now and then every ms until stopped; a run still in flight
// is not overlapped, and a hidden tab does not poll.
export function every(ms: number, fn: () => Promise<void>): () => void {
  let stopped = false;
  let busy = false;
  const tick = async () => {
    if (stopped || busy || document.hidden) return;
    busy = true;
    try {
      await fn();
    } finally {
      busy = false;
    }
  };
  void tick();
  const id = setInterval(tick, ms);
  return () => {
    stopped = true;
    clearInterval(id);
  };
}
