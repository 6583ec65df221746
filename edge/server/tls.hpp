#pragma once

#include <cstdint>
#include <memory>
#include <string>

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;

namespace edge::server {

/// The [tls] table of the config (DESIGN §9). TLS is on when `enabled`; the listener is
/// `listen_host:listen_port`, and the admin listener speaks TLS too when `admin` is set.
struct TlsOptions {
  bool enabled = false;
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 8443;      ///< 0: any free port (tests)
  std::string cert_file;                 ///< PEM: the leaf first, then the intermediates
  std::string key_file;                  ///< PEM private key of the leaf
  std::string min_protocol = "TLSv1.2";  ///< "TLSv1.2" or "TLSv1.3"
  /// TLS 1.2 cipher list (OpenSSL syntax): Mozilla's "intermediate" AEAD suites.
  std::string ciphers =
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  /// TLS 1.3 suites, in the order offered: AES-128-GCM first (the cheapest with AES-NI).
  std::string ciphersuites =
      "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
  std::string groups = "X25519:P-256:P-384";  ///< key-exchange groups, preferred first
  bool session_tickets = true;                ///< resumption by stateless tickets
  bool ktls = true;                           ///< hand the send side to the kernel if it can
  bool admin = false;                         ///< the admin listener speaks TLS too
};

/// Owning handle of an OpenSSL server context.
using TlsContextPtr = std::shared_ptr<SSL_CTX>;

/// Builds a server context from `options`: certificate chain and key loaded and checked
/// against each other, protocol floor, ciphers, groups, ALPN "http/1.1" only, tickets,
/// renegotiation refused, SSL_OP_ENABLE_KTLS when `options.ktls`. When `reuse_tickets_from`
/// is given, its ticket keys are kept (a reload must not void the tickets clients hold).
/// On failure returns null and sets `error` to a message naming the key and the file.
TlsContextPtr make_server_context(const TlsOptions& options, std::string& error,
                                  SSL_CTX* reuse_tickets_from = nullptr);

/// What a peer did after its handshake that the server must know of: set by the message
/// callback `watch_peer` installs, read by the connection after each SSL call.
struct TlsPeerEvents {
  bool established = false;           ///< set by the connection once its handshake is done
  bool renegotiation = false;         ///< a TLS 1.2 ClientHello after the handshake
  bool key_update = false;            ///< a TLS 1.3 KeyUpdate
  bool key_update_requested = false;  ///< ... asking for ours too (kTLS cannot rekey: close)
  unsigned key_updates_seen = 0;      ///< KeyUpdates counted so far (for the metric)
};

/// Installs the message callback on `ssl` that fills `events` (which must outlive `ssl`).
void watch_peer(SSL* ssl, TlsPeerEvents* events);

/// The write side of a userspace-TLS connection once its handshake is done: a BIO that
/// send(2)s to the socket, and while a buffer is lent (a file response) gathers the
/// records OpenSSL writes into it, so that a 64 KiB stage leaves in one send instead of one
/// per 16 KiB record. Never used where the kernel took the send side (kTLS needs OpenSSL's
/// own socket BIO).
class CoalescingWriter {
 public:
  /// Makes the writer `ssl`'s write BIO (reads stay on the socket BIO). Call after the
  /// handshake; the SSL owns the BIO, which refers to this object: it must outlive `ssl`.
  void attach(SSL* ssl, int fd);
  /// Gathers writes into `buf` (capacity `cap`) until flush(); null: write through.
  void lend(char* buf, std::size_t cap);
  /// Takes the lent buffer back; it must have been flushed.
  void unlend();
  /// Sends what is gathered. True once nothing is left; false when the socket is full
  /// (wait for writability and call again) or broken (`broken()`).
  bool flush();
  bool broken() const { return broken_; }
  bool pending() const { return sent_ < len_; }

  int write(const char* data, int len);  ///< the BIO's write callback

 private:
  int fd_ = -1;
  char* buf_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t len_ = 0;
  std::size_t sent_ = 0;
  bool broken_ = false;
};

/// The read side of a TLS connection: a BIO that hands OpenSSL the ciphertext the
/// connection read itself (with Asio's speculative async_read_some). Waiting for
/// readiness instead (async_wait) costs an epoll_ctl(2) per wait in Asio 1.81; this costs
/// a copy of the ciphertext, which for requests is small. OpenSSL keeps partial records in
/// its own buffer, so this one is only a small transit buffer.
class CipherFeed {
 public:
  static constexpr std::size_t kCapacity = 4096;
  /// Makes the feed `ssl`'s read BIO (writes stay where they are). It must outlive `ssl`.
  void attach(SSL* ssl);
  /// Where the next socket read goes; bytes fed and not yet taken stay in front of it.
  char* space();
  std::size_t space_size() const { return kCapacity - len_; }
  void filled(std::size_t n) { len_ += n; }

  int read(char* out, int len);  ///< the BIO's read callback

 private:
  char buf_[kCapacity];
  std::size_t pos_ = 0;
  std::size_t len_ = 0;
};

/// Drops expired sessions from `ctx`'s session-id cache (call every few seconds).
void flush_expired_sessions(SSL_CTX* ctx);

/// Whether this kernel offers the "tls" upper-layer protocol (kernel TLS): the contents of
/// /proc/sys/net/ipv4/tcp_available_ulp. The module may also load on first use, so this is
/// only a hint for logs; each connection asks OpenSSL (BIO_get_ktls_send) for the truth.
bool kernel_tls_listed();

/// The OpenSSL error queue as one line ("reason; reason"), cleared; "" when empty.
std::string drain_ssl_errors();

}  // namespace edge::server
