/**
 * The o= line of the SDP keylatch sends down one dialog leg. RFC 3264 section 8: within a
 * session the origin's session id stays and its version grows by one whenever the description
 * changes; a peer may ignore a re-offer whose version did not move. keylatch's SDP toward a leg
 * is built from the *other* side's (and, after a relay failover, by another node), so the o=
 * it carries would go back or stand still: the keeper makes it that leg's own.
 */
const ORIGIN = /^o=(\S+) (\S+) (\d+) (.*)$/m;

export class OriginKeeper {
  private origin: { user: string; session: string; version: bigint; rest: string } | null = null;
  private lastBody: string | null = null;

  /** The SDP to send now, with this leg's o= line: the same version if nothing changed, else the next. */
  stamp(sdp: string): string {
    const m = ORIGIN.exec(sdp);
    if (!m) return sdp;
    const body = sdp.replace(ORIGIN, '');
    if (!this.origin) {
      this.origin = { user: m[1]!, session: m[2]!, version: BigInt(m[3]!), rest: m[4]! };
    } else if (body !== this.lastBody) {
      this.origin.version += 1n;
    }
    this.lastBody = body;
    const o = this.origin;
    return sdp.replace(ORIGIN, `o=${o.user} ${o.session} ${o.version} ${o.rest}`);
  }
}
