package fhirfacade.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * Boots a HAPI FHIR R4 JPA server (H2 in memory) on http://127.0.0.1:PORT/fhir, the real-HAPI upstream of the
 * gateway's test suite. PORT = arg 1, else $PORT, else 8080. With HAPI_STOP_ON_STDIN_CLOSE=true it exits when
 * its standard input closes, so a test runner that dies without stopping it does not leave it running.
 */
public class HapiServer {
	public static void main(String[] args) throws Exception {
		long t0 = System.nanoTime();
		int port = Integer.parseInt(args.length > 0 ? args[0] : System.getenv().getOrDefault("PORT", "8080"));

		// fail fast if the port is taken (otherwise we would only notice after the ~20 s Spring/Hibernate boot)
		new java.net.ServerSocket(port, 1, java.net.InetAddress.getByName("127.0.0.1")).close();

		if (Boolean.parseBoolean(System.getenv("HAPI_STOP_ON_STDIN_CLOSE"))) {
			Thread watchdog = new Thread(() -> {
				try {
					while (System.in.read() != -1) {
						// drain until the parent closes the pipe
					}
				} catch (java.io.IOException ignored) {
					// a broken pipe means the parent is gone as well
				}
				System.exit(0);
			}, "stdin-watchdog");
			watchdog.setDaemon(true);
			watchdog.start();
		}

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(HapiServerConfig.class);
		spring.registerShutdownHook();

		IFhirSystemDao<?, ?> systemDao = spring.getBean(IFhirSystemDao.class);
		RestfulServer fhir = new RestfulServer(systemDao.getContext());
		fhir.registerProviders(spring.getBean(ResourceProviderFactory.class).createProviders());
		fhir.registerProvider(spring.getBean(JpaSystemProvider.class));
		fhir.setPagingProvider(spring.getBean(DatabaseBackedPagingProvider.class));
		fhir.setDefaultResponseEncoding(EncodingEnum.JSON);
		fhir.setServerConformanceProvider(new JpaCapabilityStatementProvider(
				fhir, systemDao, spring.getBean(JpaStorageSettings.class),
				spring.getBean(ISearchParamRegistry.class), spring.getBean(IValidationSupport.class)));

		Server jetty = new Server(new java.net.InetSocketAddress("127.0.0.1", port));
		ServletContextHandler ctx = new ServletContextHandler();
		ctx.setContextPath("/");
		ServletHolder holder = new ServletHolder(fhir);
		holder.setInitOrder(1);
		ctx.addServlet(holder, "/fhir/*");
		jetty.setHandler(ctx);
		jetty.setStopAtShutdown(true);
		jetty.start();

		// warm up: the first CapabilityStatement takes a few seconds to build, so do it before announcing readiness
		var http = java.net.http.HttpClient.newHttpClient();
		var metadata = java.net.http.HttpRequest.newBuilder(java.net.URI.create("http://127.0.0.1:" + port + "/fhir/metadata")).build();
		int status = http.send(metadata, java.net.http.HttpResponse.BodyHandlers.discarding()).statusCode();
		if (status != 200) throw new IllegalStateException("GET /fhir/metadata returned " + status);

		System.out.printf("HAPI_READY http://127.0.0.1:%d/fhir (boot %d ms)%n", port, (System.nanoTime() - t0) / 1_000_000);
		jetty.join();
	}
}
