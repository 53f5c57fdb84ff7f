// swift-tools-version: 6.2
import PackageDescription

// The core (`Futurelock`) depends only on swift-collections, swift-log and swift-metrics' API, so a service that links it
// pays for nothing else. Symbolication (libdw), the CLI, the reproducers and the benchmark are separate
// targets; heavy integrations (PostgresNIO, Hummingbird) get targets of their own.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Futurelock",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Futurelock", targets: ["Futurelock"]),
        .library(name: "FuturelockSymbols", targets: ["FuturelockSymbols"]),
        .library(name: "FuturelockServiceLifecycle", targets: ["FuturelockServiceLifecycle"]),
        .library(name: "FuturelockPostgres", targets: ["FuturelockPostgres"]),
        .executable(name: "futurelock", targets: ["FuturelockCLI"]),
        .executable(name: "futurelock-bench", targets: ["FuturelockBenchmarks"]),
        .executable(name: "futurelock-icount", targets: ["FuturelockInstructionCount"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // Happens-before annotations that make `Lock` visible to ThreadSanitizer; free without it.
        .target(name: "CFuturelockSanitizer"),
        .target(
            name: "Futurelock",
            dependencies: [
                "CFuturelockSanitizer",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CLibdw",
            pkgConfig: "libdw",
            providers: [.apt(["libdw-dev"])]
        ),
        .target(
            name: "FuturelockSymbols",
            dependencies: ["CLibdw", "Futurelock"],
            swiftSettings: strict
        ),
        .target(
            name: "FuturelockServiceLifecycle",
            dependencies: [
                "Futurelock",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // PostgreSQL through PostgresNIO: a target of its own, so the core does not pay for its build.
        .target(
            name: "FuturelockPostgres",
            dependencies: ["Futurelock", .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "FuturelockReproducers",
            dependencies: ["Futurelock"],
            path: "Reproducers",
            exclude: ["README.md", "run-gallery.sh"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "FuturelockCLI",
            dependencies: [
                "Futurelock",
                "FuturelockSymbols",
                "FuturelockReproducers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/futurelock",
            swiftSettings: strict
        ),
        // The plain, uninstrumented Mutex+Deque design the benchmark measures ours against.
        .target(
            name: "PlainReference",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")],
            path: "Tests/Benchmarks/PlainReference",
            // Built with cross-module optimisation, so its generic code is specialised in the
            // benchmark as a hand-written design in one's own module would be.
            swiftSettings: strict + [.unsafeFlags(["-cross-module-optimization"])]
        ),
        // Instruction counts of the synchronous permit path, run under callgrind.
        .executableTarget(
            name: "FuturelockInstructionCount",
            dependencies: ["Futurelock", "PlainReference"],
            path: "Tests/Benchmarks/InstructionCount",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "FuturelockBenchmarks",
            dependencies: [
                "Futurelock",
                "PlainReference",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            ],
            path: "Tests/Benchmarks",
            exclude: ["PlainReference", "InstructionCount", "instruction-counts.sh"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockTests",
            dependencies: ["Futurelock", .product(name: "MetricsTestKit", package: "swift-metrics"),
                           .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockReproducersTests",
            dependencies: ["FuturelockReproducers", "Futurelock"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockServiceLifecycleTests",
            dependencies: [
                "FuturelockServiceLifecycle", "Futurelock",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockPostgresTests",
            dependencies: ["FuturelockPostgres", "Futurelock", .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockCLITests",
            dependencies: ["FuturelockCLI", "Futurelock"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FuturelockSymbolsTests",
            dependencies: ["FuturelockSymbols"],
            swiftSettings: strict
        ),
    ]
)
