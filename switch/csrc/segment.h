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

/* The smallest segment size kp cuts to: a sender's GSO size (or what an MTU leaves for
 * payload) below it is refused, the frame dropped.  88 is Linux's TCP_MIN_MSS, below
 * which no stack sends; a 64 KiB super-frame cut at 88 bytes is at most 745 segments,
 * where a GSO size of 1 would make 65,000 frames of one (an amplifier any sender on a
 * port could aim at the switch and the receiver). */
#define SEG_MIN_SIZE 88u

/* What tcp_segment and udp_segment return for a frame they refuse to cut (a segment
 * size below SEG_MIN_SIZE): the frame is to be dropped. */
#define SEG_REFUSED (-1)

/* tcp_segment's mtu when only the sender's segment size is to limit the segments. */
#define SEG_ANY_MTU 65535u

/* Bytes of scratch tcp_segment needs for an MTU. */
#define SEG_SCRATCH(mtu) ((mtu) + 64u)

/* If frame is TCP with more payload than a segment holds (what fits mtu, and at most
 * seg_size bytes unless seg_size is 0), emits its segments (built in scratch, at least
 * SEG_SCRATCH(mtu) bytes) and returns how many; returns 0 for a frame to be sent as
 * it is, and SEG_REFUSED when the segment size it would cut to is below SEG_MIN_SIZE.
 * An IP fragment (even a first one, which holds the TCP header) is never cut: its
 * payload is part of a datagram, not a stream of its own. */
int tcp_segment(const uint8_t *frame, uint32_t len, uint32_t mtu, uint32_t seg_size,
                uint8_t *scratch, uint32_t scratch_len, seg_emit_fn emit, void *ctx);

/* If frame is UDP with more than gso_size bytes of payload, emits one datagram per
 * gso_size bytes (the last may be shorter; built in scratch, which must hold the
 * headers and gso_size bytes), each with its IP length/id, UDP length and full
 * checksums, and returns how many; returns 0 for a frame to be handled as it is (a
 * fragment among them), SEG_REFUSED for a gso_size below SEG_MIN_SIZE. */
int udp_segment(const uint8_t *frame, uint32_t len, uint32_t gso_size, uint8_t *scratch,
                uint32_t scratch_len, seg_emit_fn emit, void *ctx);

#endif
