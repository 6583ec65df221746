#include "edge/server/tls.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509err.h>
#include <sys/socket.h>

namespace edge::server {
namespace {

constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

// ALPN: http/1.1 or nothing (DESIGN §9: HTTP/2 framing would lose sendfile). A client that
// offers only h2 gets no ALPN answer and may still speak HTTP/1.1.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpn, sizeof kAlpn, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

void on_message(int write_p, int, int content_type, const void* buf, size_t len, SSL* ssl,
                void* arg) {
  auto* ev = static_cast<TlsPeerEvents*>(arg);
  if (write_p != 0 || ev == nullptr || !ev->established || len == 0)
    return;
  const auto* p = static_cast<const unsigned char*>(buf);
  if (content_type == SSL3_RT_HANDSHAKE) {
    if (p[0] == SSL3_MT_KEY_UPDATE) {
      ev->key_update = true;
      ++ev->key_updates_seen;
      // KeyUpdate body: 1 byte request_update after the 4-byte handshake header.
      if (len >= 5 && p[4] == 1)
        ev->key_update_requested = true;
    } else if (p[0] == SSL3_MT_CLIENT_HELLO) {
      ev->renegotiation = true;
    }
  } else if (content_type == SSL3_RT_HEADER && p[0] == SSL3_RT_HANDSHAKE &&
             SSL_version(ssl) <= TLS1_2_VERSION) {
    // A plaintext handshake record after a TLS 1.2 handshake: a renegotiation attempt.
    ev->renegotiation = true;
  }
}

// The BIO method of CoalescingWriter: write and flush go to the writer; nothing else is
// supported (OpenSSL asks for kTLS and pending counts, and gets 0).
int coalescing_write(BIO* b, const char* data, int len) {
  auto* w = static_cast<CoalescingWriter*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const int n = w->write(data, len);
  if (n < 0 && !w->broken())
    BIO_set_retry_write(b);
  return n;
}

long coalescing_ctrl(BIO* b, int cmd, long, void*) {
  auto* w = static_cast<CoalescingWriter*>(BIO_get_data(b));
  if (cmd == BIO_CTRL_FLUSH) {
    BIO_clear_retry_flags(b);
    if (w->flush())
      return 1;
    if (!w->broken())
      BIO_set_retry_write(b);
    return -1;
  }
  if (cmd == BIO_CTRL_WPENDING)
    return w->pending() ? 1 : 0;
  return 0;
}

int feed_read(BIO* b, char* out, int len) {
  auto* f = static_cast<CipherFeed*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const int n = f->read(out, len);
  if (n < 0)
    BIO_set_retry_read(b);
  return n;
}

long feed_ctrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

// A BIO method of this file: `name`, initialised on creation, then `setup` adds its calls.
template <class Setup>
BIO_METHOD* new_method(const char* name, Setup setup) {
  BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, name);
  BIO_meth_set_create(m, [](BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  });
  setup(m);
  return m;
}

BIO_METHOD* feed_method() {
  static BIO_METHOD* method = new_method("edge-feed", [](BIO_METHOD* m) {
    BIO_meth_set_read(m, feed_read);
    BIO_meth_set_ctrl(m, feed_ctrl);
  });
  return method;
}

BIO_METHOD* coalescing_method() {
  static BIO_METHOD* method = new_method("edge-coalesce", [](BIO_METHOD* m) {
    BIO_meth_set_write(m, coalescing_write);
    BIO_meth_set_ctrl(m, coalescing_ctrl);
  });
  return method;
}

}  // namespace

void CipherFeed::attach(SSL* ssl) {
  BIO* b = BIO_new(feed_method());
  BIO_set_data(b, this);
  SSL_set0_rbio(ssl, b);  // drops the SSL's read reference to the socket BIO
}

char* CipherFeed::space() {
  if (pos_ == len_) {
    pos_ = len_ = 0;
  } else if (pos_ > 0) {
    std::memmove(buf_, buf_ + pos_, len_ - pos_);
    len_ -= pos_;
    pos_ = 0;
  }
  return buf_ + len_;
}

int CipherFeed::read(char* out, int len) {
  if (pos_ == len_)
    return -1;
  const std::size_t n = std::min(static_cast<std::size_t>(len), len_ - pos_);
  std::memcpy(out, buf_ + pos_, n);
  pos_ += n;
  return static_cast<int>(n);
}

void CoalescingWriter::attach(SSL* ssl, int fd) {
  fd_ = fd;
  BIO* b = BIO_new(coalescing_method());
  BIO_set_data(b, this);
  SSL_set0_wbio(ssl, b);  // drops the SSL's write reference to the socket BIO
}

void CoalescingWriter::lend(char* buf, std::size_t cap) {
  buf_ = buf;
  cap_ = cap;
  len_ = sent_ = 0;
}

void CoalescingWriter::unlend() {
  buf_ = nullptr;
  cap_ = len_ = sent_ = 0;
}

bool CoalescingWriter::flush() {
  while (sent_ < len_) {
    const ssize_t n = ::send(fd_, buf_ + sent_, len_ - sent_, MSG_NOSIGNAL);
    if (n > 0) {
      sent_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
      broken_ = true;
    return false;
  }
  len_ = sent_ = 0;
  return true;
}

int CoalescingWriter::write(const char* data, int len) {
  const auto want = static_cast<std::size_t>(len);
  if (buf_ != nullptr) {
    if (len_ + want > cap_ && !flush())
      return -1;
    if (len_ + want <= cap_) {
      std::memcpy(buf_ + len_, data, want);
      len_ += want;
      return len;
    }
  }
  // Write through: nothing lent, or a record larger than the whole buffer.
  while (true) {
    const ssize_t n = ::send(fd_, data, want, MSG_NOSIGNAL);
    if (n >= 0)
      return static_cast<int>(n);
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      broken_ = true;
    return -1;
  }
}

void watch_peer(SSL* ssl, TlsPeerEvents* events) {
  SSL_set_msg_callback(ssl, on_message);
  SSL_set_msg_callback_arg(ssl, events);
}

std::string drain_ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty())
      out += "; ";
    const char* reason = ERR_reason_error_string(e);
    out += reason != nullptr ? reason : buf;
  }
  return out;
}

TlsContextPtr make_server_context(const TlsOptions& o, std::string& error,
                                  SSL_CTX* reuse_tickets_from) {
  ERR_clear_error();
  TlsContextPtr ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) {
    error = "tls: cannot create an OpenSSL context: " + drain_ssl_errors();
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  int floor = 0;
  if (o.min_protocol == "TLSv1.2") {
    floor = TLS1_2_VERSION;
  } else if (o.min_protocol == "TLSv1.3") {
    floor = TLS1_3_VERSION;
  } else {
    error = "tls.min_protocol: expected 'TLSv1.2' or 'TLSv1.3', got '" + o.min_protocol + "'";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(c, floor);
  if (o.cert_file.empty() || o.key_file.empty()) {
    error = std::string(o.cert_file.empty() ? "tls.cert_file" : "tls.key_file") +
            ": required when [tls] listen is set";
    return nullptr;
  }
  // Read the files ourselves first so that a missing or unreadable one gets a plain message.
  for (const auto& [key, path] :
       {std::pair{"tls.cert_file", &o.cert_file}, std::pair{"tls.key_file", &o.key_file}}) {
    std::ifstream in(*path);
    if (!in) {
      error = std::string(key) + ": cannot read '" + *path + "'";
      return nullptr;
    }
  }
  if (SSL_CTX_use_certificate_chain_file(c, o.cert_file.c_str()) != 1) {
    error = "tls.cert_file: '" + o.cert_file + "' is not a PEM certificate chain (" +
            drain_ssl_errors() + ")";
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(c, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    const unsigned long last = ERR_peek_last_error();
    if (ERR_GET_LIB(last) == ERR_LIB_X509 && ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH) {
      error = "tls.key_file: '" + o.key_file + "' does not match the certificate in '" +
              o.cert_file + "'";
      drain_ssl_errors();
    } else {
      error = "tls.key_file: '" + o.key_file + "' is not a PEM private key (" + drain_ssl_errors() +
              ")";
    }
    return nullptr;
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    error = "tls.key_file: '" + o.key_file + "' does not match the certificate in '" + o.cert_file +
            "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.ciphers.empty() && SSL_CTX_set_cipher_list(c, o.ciphers.c_str()) != 1) {
    error = "tls.ciphers: no usable cipher in '" + o.ciphers + "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(c, o.ciphersuites.c_str()) != 1) {
    error = "tls.ciphersuites: no usable TLS 1.3 suite in '" + o.ciphersuites + "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.groups.empty() && SSL_CTX_set1_groups_list(c, o.groups.c_str()) != 1) {
    error = "tls.groups: no usable group in '" + o.groups + "'";
    drain_ssl_errors();
    return nullptr;
  }
  std::uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                       SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE;
  if (!o.session_tickets)
    opts |= SSL_OP_NO_TICKET;
  if (o.ktls)
    opts |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(c, opts);
  // Partial writes: SSL_write returns after each record, so the write loop keeps its own
  // position; the buffer may move between retries (a reused staging buffer).
  // No SSL_MODE_RELEASE_BUFFERS: it frees and allocates the record buffers around every
  // record (measured: 3% of the CPU of a 64 KiB HTTPS GET). The server's sweep frees them
  // instead once a connection sits idle (SSL_free_buffers), so idle keep-alive connections
  // still hold no record buffers.
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read ahead: one read(2) takes a record's header and body (and what follows) instead of
  // two reads per record. Every read path asks SSL_read before waiting on the socket, so
  // bytes OpenSSL holds are never left waiting for readiness that will not come.
  SSL_CTX_set_read_ahead(c, 1);
  // One ticket per full handshake is enough for a client that reconnects; two cost another
  // encryption and record for nothing.
  if (o.session_tickets)
    SSL_CTX_set_num_tickets(c, 1);
  // With tickets (stateless, TLS 1.2 and 1.3) nothing is stored per session, as nginx's
  // default; without them a session-id cache resumes TLS 1.2 clients. Either way OpenSSL
  // does not sweep it every 255 handshakes (a walk of the whole table on the handshake
  // path): the server's sweep calls flush_expired_sessions() instead.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR |
                                        (o.session_tickets ? SSL_SESS_CACHE_NO_INTERNAL_STORE : 0));
  static constexpr unsigned char kSessionId[] = "bundle-edge";
  SSL_CTX_set_session_id_context(c, kSessionId, sizeof kSessionId - 1);
  SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);
  if (reuse_tickets_from != nullptr && o.session_tickets) {
    std::array<unsigned char, 80> keys{};
    if (SSL_CTX_get_tlsext_ticket_keys(reuse_tickets_from, keys.data(), keys.size()) == 1)
      SSL_CTX_set_tlsext_ticket_keys(c, keys.data(), keys.size());
  }
  ERR_clear_error();
  return ctx;
}

void flush_expired_sessions(SSL_CTX* ctx) {
  SSL_CTX_flush_sessions(ctx, static_cast<long>(std::time(nullptr)));
}

bool kernel_tls_listed() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_available_ulp");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("tls") != std::string::npos;
}

}  // namespace edge::server
