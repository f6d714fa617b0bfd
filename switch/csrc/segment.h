/* Software segmentation (twins: fastpath_ref.segment_tcp, segment_udp).
 *
 * A veth hands AF_PACKET the sender's GSO super-frames (up to 64 KiB of TCP, or of UDP
 * datagrams sent with UDP_SEGMENT, in one frame) because the kernel expects to segment
 * them late; a frame we send on gets no such help, and one larger than the egress MTU
 * would be refused.
 * - TCP: super-frames are switched whole and cut on output into segments of the
 *   sender's GSO size (its MSS for this connection, which the vnet header the port
 *   reads says), or of what fits the egress MTU when that is smaller or unknown (a
 *   frame the slow path sends); each has its own IP length/id, TCP sequence number,
 *   flags and full checksums.  Cutting only by the MTU would undo a smaller MSS the
 *   receiver or the path asked for.
 * - UDP: the datagram boundaries are the sender's (its gso_size, which only the vnet
 *   header the port reads says), so a UDP GSO frame is cut on input, into the
 *   datagrams the sender wrote, and each one is switched on its own. */
#ifndef KP_SEGMENT_H
#define KP_SEGMENT_H

#include <stdint.h>

typedef void (*seg_emit_fn)(void *ctx, const uint8_t *seg, uint32_t len);

/* tcp_segment's mtu when only the sender's segment size is to limit the segments. */
#define SEG_ANY_MTU 65535u

/* Bytes of scratch tcp_segment needs for an MTU. */
#define SEG_SCRATCH(mtu) ((mtu) + 64u)

/* If frame is TCP with more payload than a segment holds (what fits mtu, and at most
 * seg_size bytes unless seg_size is 0), emits its segments (built in scratch, at least
 * SEG_SCRATCH(mtu) bytes) and returns how many; returns 0 for a frame to be sent as
 * it is. */
int tcp_segment(const uint8_t *frame, uint32_t len, uint32_t mtu, uint32_t seg_size,
                uint8_t *scratch, uint32_t scratch_len, seg_emit_fn emit, void *ctx);

/* If frame is UDP with more than gso_size bytes of payload, emits one datagram per
 * gso_size bytes (the last may be shorter; built in scratch, which must hold the
 * headers and gso_size bytes), each with its IP length/id, UDP length and full
 * checksums, and returns how many; returns 0 for a frame to be handled as it is. */
int udp_segment(const uint8_t *frame, uint32_t len, uint32_t gso_size, uint8_t *scratch,
                uint32_t scratch_len, seg_emit_fn emit, void *ctx);

#endif
