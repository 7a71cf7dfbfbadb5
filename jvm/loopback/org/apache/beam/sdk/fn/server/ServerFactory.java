/*
 * Replaces Beam 2.62's org.apache.beam.sdk.fn.server.ServerFactory (same API) on the job
 * server's class path, ahead of the original (transforms/kafka_io.py puts it there).
 *
 * Why: Beam's TCP server factory builds every gRPC server with NettyServerBuilder.forPort, so
 * the job service, the artifact service and each Fn API server (control, data, state, logging,
 * provisioning) listen on all interfaces, whatever host their URL names; Beam has no option for
 * it. This one binds the address the server advertises: the URL's host for an explicit URL
 * (the job server's --job-host, "localhost" by default), the loopback address for an allocated
 * one (Beam already advertises that one as the URL). Nothing that worked stops working: a
 * client elsewhere could never use a "localhost" URL.
 *
 * The epoll variants are kept as Beam has them (they already bind the given address).
 */
package org.apache.beam.sdk.fn.server;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;
import org.apache.beam.vendor.grpc.v1p60p1.io.netty.channel.epoll.EpollEventLoopGroup;
import org.apache.beam.vendor.grpc.v1p60p1.io.netty.channel.epoll.EpollServerDomainSocketChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.netty.channel.epoll.EpollServerSocketChannel;
import org.apache.beam.vendor.grpc.v1p60p1.io.netty.channel.unix.DomainSocketAddress;
import org.apache.beam.vendor.grpc.v1p60p1.io.netty.util.internal.ThreadLocalRandom;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.base.Preconditions;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.net.HostAndPort;

public abstract class ServerFactory {
  private static final int KEEP_ALIVE_TIME_SEC = 20;

  public static ServerFactory createDefault() {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault());
  }

  public static ServerFactory createWithUrlFactory(UrlFactory urlFactory) {
    return new InetSocketAddressServerFactory(urlFactory);
  }

  public static ServerFactory createWithPortSupplier(Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(UrlFactory.createDefault(), portSupplier);
  }

  public static ServerFactory createWithUrlFactoryAndPortSupplier(
      UrlFactory urlFactory, Supplier<Integer> portSupplier) {
    return new InetSocketAddressServerFactory(urlFactory, portSupplier);
  }

  public static ServerFactory createEpollSocket() {
    return new EpollSocket();
  }

  public static ServerFactory createEpollDomainSocket() {
    return new EpollDomainSocket();
  }

  /** Starts a server on an address of the factory's choosing and writes its URL to the builder. */
  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
      throws IOException;

  /** Starts a server on the address of the descriptor's URL. */
  public abstract Server create(
      List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
      throws IOException;

  private static Server start(NettyServerBuilder builder, List<BindableService> services)
      throws IOException {
    builder
        .maxInboundMessageSize(Integer.MAX_VALUE)
        .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
    for (BindableService service : services) {
      builder.addService(
          ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
    }
    return builder.build().start();
  }

  /** TCP servers bound to the address they advertise. */
  public static class InetSocketAddressServerFactory extends ServerFactory {
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory) {
      this(urlFactory, () -> 0);
    }

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
      this.urlFactory = urlFactory;
      this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
        throws IOException {
      InetSocketAddress address =
          new InetSocketAddress(InetAddress.getLoopbackAddress(), portSupplier.get());
      Server server = start(NettyServerBuilder.forAddress(address), services);
      builder.setUrl(urlFactory.createUrl(address.getHostName(), server.getPort()));
      return server;
    }

    @Override
    public Server create(
        List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(serviceDescriptor.getUrl());
      Preconditions.checkArgument(
          address instanceof InetSocketAddress,
          "%s requires a host:port socket address, got %s",
          getClass().getSimpleName(),
          serviceDescriptor.getUrl());
      return start(NettyServerBuilder.forAddress(address), services);
    }
  }

  /** TCP servers on Netty's epoll transport. */
  private static class EpollSocket extends ServerFactory {
    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
        throws IOException {
      InetSocketAddress address = new InetSocketAddress(InetAddress.getLoopbackAddress(), 0);
      Server server = create(address, services);
      builder.setUrl(HostAndPort.fromParts(address.getHostName(), server.getPort()).toString());
      return server;
    }

    @Override
    public Server create(
        List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(serviceDescriptor.getUrl());
      Preconditions.checkArgument(
          address instanceof InetSocketAddress,
          "%s requires a host:port socket address, got %s",
          EpollSocket.class.getSimpleName(),
          serviceDescriptor.getUrl());
      return create((InetSocketAddress) address, services);
    }

    private static Server create(InetSocketAddress address, List<BindableService> services)
        throws IOException {
      return start(
          NettyServerBuilder.forAddress(address)
              .channelType(EpollServerSocketChannel.class)
              .workerEventLoopGroup(new EpollEventLoopGroup())
              .bossEventLoopGroup(new EpollEventLoopGroup()),
          services);
    }
  }

  /** Servers on Unix domain sockets in the temporary directory. */
  private static class EpollDomainSocket extends ServerFactory {
    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder builder)
        throws IOException {
      File socket;
      do {
        socket =
            new File(
                System.getProperty("java.io.tmpdir"),
                String.format("fnapi%d.sock", ThreadLocalRandom.current().nextInt(10000)));
      } while (socket.exists());
      builder.setUrl("unix://" + socket.getAbsolutePath());
      return create(services, builder.build());
    }

    @Override
    public Server create(
        List<BindableService> services, Endpoints.ApiServiceDescriptor serviceDescriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(serviceDescriptor.getUrl());
      Preconditions.checkArgument(
          address instanceof DomainSocketAddress,
          "%s requires a Unix domain socket address, got %s",
          EpollDomainSocket.class.getSimpleName(),
          serviceDescriptor.getUrl());
      return start(
          NettyServerBuilder.forAddress(address)
              .channelType(EpollServerDomainSocketChannel.class)
              .workerEventLoopGroup(new EpollEventLoopGroup())
              .bossEventLoopGroup(new EpollEventLoopGroup()),
          services);
    }
  }

  /** Makes the URL a server advertises from its host and port. */
  public interface UrlFactory {
    String createUrl(String address, int port);

    static UrlFactory createDefault() {
      return (host, port) -> HostAndPort.fromParts(host, port).toString();
    }
  }
}
